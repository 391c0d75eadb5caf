"""The publisher's own record of what it published: the facts a key compromise cannot rewrite.

Every `publish` and `resign` from this machine appends (registry, name, version) → digest,
commit and the local time, in `$PATCHKIT_HOME/state/published.json`. After a signing key is
stolen, everything the registry says (its index, its publish times, its files) may be the
thief's: a version dated before the compromise, or other files under an old version. Recovery
(`patchkit root rotate-key --compromised-since T`) and `resign` vouch only for what this record
(or the vendor, by `--vouch NAME@VERSION=DIGEST`) says was published before T.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from patchkit import constants
from patchkit._internal.clock import fmt_time, now_utc, parse_utc
from patchkit._internal.files import atomic_write_text, file_lock
from patchkit._internal.jsonio import dumps_canonical, read_guard_state
from patchkit.errors import ReadOnlyError, UsageError
from patchkit.version import Version

SCHEMA = "patchkit-ledger/1"
MAX_LEDGER_BYTES = 32 * 1024 * 1024
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class Published:
    version: str
    digest: str
    commit: str
    published_at: datetime


def _path() -> Path:
    return constants.patchkit_home() / "state" / "published.json"


def _key(registry_ident: str, name: str) -> str:
    return f"{registry_ident} {name}"


def _shape(raw: Any) -> dict[str, Any]:
    return raw if isinstance(raw, dict) and raw.get("schema") == SCHEMA and isinstance(raw.get("entries"), dict) else \
        {"schema": SCHEMA, "entries": {}}


def _read() -> dict[str, Any]:
    return read_guard_state(_path(), MAX_LEDGER_BYTES, "restore it; it records what this machine published",
                            missing={"schema": SCHEMA, "entries": {}}, parse=_shape)


def record(registry_ident: str, name: str, version: str, digest: str, commit: str) -> None:
    """Remember a publish or re-sign (a read-only home records nothing, and says nothing)."""
    path = _path()
    with contextlib.suppress(ReadOnlyError, OSError), file_lock(path.with_name(path.name + ".lock")):
        data = _read()
        versions = data["entries"].setdefault(_key(registry_ident, name), {})
        first = versions.get(version, {}).get("published_at") if versions.get(version, {}).get("digest") == digest else None
        versions[version] = {"digest": digest, "commit": commit, "published_at": first or fmt_time(now_utc())}
        atomic_write_text(path, dumps_canonical(data), mode=0o600)


def published(registry_ident: str, name: str) -> dict[str, Published]:
    """What this machine published of `name` to that registry (later re-signs keep the first time)."""
    out: dict[str, Published] = {}
    raw = _read()["entries"].get(_key(registry_ident, name), {})
    for version, rec in (raw.items() if isinstance(raw, dict) else []):
        when = parse_utc(rec.get("published_at")) if isinstance(rec, dict) else None
        if when is None or not isinstance(rec.get("digest"), str) or not isinstance(rec.get("commit"), str):
            continue
        out[str(version)] = Published(str(version), rec["digest"], rec["commit"], when)
    return out


def parse_vouch(text: str) -> tuple[str, str, str]:
    """`NS/NAME@X.Y.Z=sha256:…`: a version the vendor vouches for by hand (from its own records)."""
    ref, sep, digest = text.partition("=")
    name, at, version = ref.partition("@")
    if not sep or not at or not DIGEST_RE.match(digest):
        raise UsageError(f"--vouch {text!r} is not NS/NAME@X.Y.Z=sha256:DIGEST",
                         "give the artifact digest you published, e.g. from `patchkit inspect DIR --json`")
    from patchkit.manifest import validate_name

    return validate_name(name), str(Version.parse(version)), digest


__all__ = ["Published", "parse_vouch", "published", "record"]
