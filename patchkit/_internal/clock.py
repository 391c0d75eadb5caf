"""UTC timestamps as patchkit writes them everywhere: `2026-01-31T12:00:00Z`, whole seconds."""

from __future__ import annotations

import re
from datetime import UTC, datetime

TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


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


def parse_utc(text: object) -> datetime | None:
    """Lenient reading of a time in a signed statement, where a bad value is a refusal, not a crash:
    `YYYY-MM-DDTHH:MM:SSZ` (or a bare date, meaning its midnight UTC); None for anything else."""
    if not isinstance(text, str):
        return None
    try:
        if _DATE_RE.match(text):
            return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
        return parse_time(text)
    except ValueError:
        return None


__all__ = ["TIME_FORMAT", "fmt_time", "now_utc", "parse_time", "parse_utc", "utc_stamp"]
