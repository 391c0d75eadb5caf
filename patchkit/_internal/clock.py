"""UTC timestamps as patchkit writes them everywhere: `2026-01-31T12:00:00Z`, whole seconds."""

from __future__ import annotations

from datetime import UTC, datetime

TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def now_utc() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def fmt_time(t: datetime) -> str:
    return t.astimezone(UTC).strftime(TIME_FORMAT)


def utc_stamp() -> str:
    """Now, formatted: what `created_at`, `added_at` and `published_at` hold."""
    return fmt_time(now_utc())


def parse_time(text: str) -> datetime:
    """The inverse of `fmt_time`; ValueError for anything else."""
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not a timestamp")
    return datetime.strptime(text, TIME_FORMAT).replace(tzinfo=UTC)


__all__ = ["TIME_FORMAT", "fmt_time", "now_utc", "parse_time", "utc_stamp"]
