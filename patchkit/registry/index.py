"""The signed per-patch index (`patchkit-index.json` + `patchkit-index.sig`) and its TUF checks.

The index is the only thing a client trusts about a registry: which versions exist, at which
commit, with which artifact digest, and whether they are yanked. Each client remembers the
highest `index_version` it has verified per (registry, name), and refuses an older index
(rollback), an expired one (freeze), and an artifact whose digest the index does not list
(mix-and-match).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from patchkit import constants
from patchkit._io import atomic_write_text, file_lock
from patchkit._json import dumps_canonical, loads_strict
from patchkit.errors import IntegrityError, InvalidInputError
from patchkit.keys import PrivateKey
from patchkit.signing import Signed, sign_blobs, verify_blobs
from patchkit.trust import TrustStore
from patchkit.version import Version

INDEX_SCHEMA = "patchkit-index/1"
DEFAULT_EXPIRES_DAYS = 30
MAX_INDEX_BYTES = 16 * 1024 * 1024
MAX_INDEX_SIG_BYTES = 1024 * 1024
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def now_utc() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def fmt_time(t: datetime) -> str:
    return t.astimezone(UTC).strftime(TIME_FORMAT)


def parse_time(text: str, what: str) -> datetime:
    try:
        return datetime.strptime(text, TIME_FORMAT).replace(tzinfo=UTC)
    except (TypeError, ValueError):
        raise IntegrityError(f"{what}: {text!r} is not a UTC time like 2025-01-31T12:00:00Z", "the index is corrupt") from None


@dataclass
class IndexEntry:
    version: str
    commit: str
    digest: str  # "sha256:<root>", the artifact digest
    published_at: str
    files: dict[str, int]  # file name -> size in bytes (the download bound)
    yanked: bool = False
    yank_reason: str | None = None

    @property
    def total_size(self) -> int:
        return sum(self.files.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "commit": self.commit,
            "digest": self.digest,
            "published_at": self.published_at,
            "files": dict(sorted(self.files.items())),
            "yanked": self.yanked,
            "yank_reason": self.yank_reason,
        }


@dataclass
class Index:
    name: str
    index_version: int
    expires: str
    versions: dict[str, IndexEntry] = field(default_factory=dict)
    updated_at: str = ""

    def to_bytes(self) -> bytes:
        body = {
            "schema": INDEX_SCHEMA,
            "name": self.name,
            "index_version": self.index_version,
            "expires": self.expires,
            "updated_at": self.updated_at,
            "versions": {v: e.to_dict() for v, e in sorted(self.versions.items(), key=lambda kv: Version.parse(kv[0]))},
        }
        return dumps_canonical(body).encode("utf-8")

    def sorted_entries(self) -> list[IndexEntry]:
        return sorted(self.versions.values(), key=lambda e: Version.parse(e.version))

    def expiry(self) -> datetime:
        return parse_time(self.expires, f"index of {self.name}")

    def next(self, *, expires_days: int = DEFAULT_EXPIRES_DAYS) -> Index:
        """A copy with `index_version` + 1 and a fresh expiry, ready to be changed and signed."""
        t = now_utc()
        return Index(
            name=self.name,
            index_version=self.index_version + 1,
            expires=fmt_time(t + timedelta(days=expires_days)),
            versions={k: IndexEntry(**{**vars(e), "files": dict(e.files)}) for k, e in self.versions.items()},
            updated_at=fmt_time(t),
        )

    @classmethod
    def empty(cls, name: str) -> Index:
        return cls(name=name, index_version=0, expires=fmt_time(now_utc()), versions={}, updated_at="")


def _entry(version: str, raw: Any, where: str) -> IndexEntry:
    try:
        Version.parse(version)
        files = raw["files"]
        if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(n, int) and n >= 0 for k, n in files.items()):
            raise TypeError
        if any("/" in k or k in ("", ".", "..") for k in files):
            raise TypeError
        reason = raw.get("yank_reason")
        e = IndexEntry(
            version=version,
            commit=str(raw["commit"]),
            digest=str(raw["digest"]),
            published_at=str(raw["published_at"]),
            files={str(k): int(n) for k, n in files.items()},
            yanked=bool(raw["yanked"]),
            yank_reason=str(reason) if reason is not None else None,
        )
    except (KeyError, TypeError, AttributeError, InvalidInputError):
        raise IntegrityError(f"{where}: malformed entry for version {version!r}", "the index is corrupt; ask the publisher to re-sign it") from None
    if not e.digest.startswith("sha256:") or not e.commit:
        raise IntegrityError(f"{where}: entry {version} lacks a commit or a sha256 digest", "the index is corrupt")
    return e


def parse_index(data: bytes, *, where: str) -> Index:
    try:
        raw = loads_strict(data, what=where)
    except InvalidInputError as exc:
        raise IntegrityError(exc.message, "the index is corrupt; ask the publisher to re-sign it") from None
    try:
        if raw["schema"] != INDEX_SCHEMA:
            raise IntegrityError(f"{where}: unknown index schema {raw['schema']!r}", "upgrade patchkit")
        iv = raw["index_version"]
        if not isinstance(iv, int) or isinstance(iv, bool) or iv < 1:
            raise TypeError
        versions = raw["versions"]
        if not isinstance(versions, dict):
            raise TypeError
        idx = Index(
            name=str(raw["name"]),
            index_version=iv,
            expires=str(raw["expires"]),
            versions={v: _entry(v, e, where) for v, e in versions.items()},
            updated_at=str(raw.get("updated_at", "")),
        )
    except (KeyError, TypeError):
        raise IntegrityError(f"{where}: malformed index", "the index is corrupt; ask the publisher to re-sign it") from None
    idx.expiry()
    return idx


def sign_index(index: Index, key: PrivateKey) -> tuple[bytes, bytes]:
    """(index bytes, signature bytes): a model-signing bundle over the one index file."""
    data = index.to_bytes()
    return data, sign_blobs(index.name, {constants.INDEX_FILE: data}, key, sig_name=constants.INDEX_SIG_FILE)


def verify_index(data: bytes, sig: bytes | None, trust: TrustStore, name: str, *, where: str) -> tuple[Index, Signed]:
    """Signature, trust and scope for `name`, then content: the index names the patch asked for."""
    if sig is None:
        raise IntegrityError(f"{where}: the index is not signed ({constants.INDEX_SIG_FILE} is missing)",
                             "refusing an unsigned index; ask the publisher to run `patchkit index refresh`")
    signed = verify_blobs(sig, {constants.INDEX_FILE: data}, trust, name, source=f"{where} {constants.INDEX_SIG_FILE}")
    index = parse_index(data, where=where)
    if index.name != name:
        raise IntegrityError(f"{where}: the index is for {index.name!r}, not {name!r}", "the registry served another patch's index")
    return index, signed


def check_fresh(index: Index, *, where: str, now: datetime | None = None) -> None:
    """Freeze attack: an index past its expiry is refused."""
    t = now or now_utc()
    if index.expiry() <= t:
        raise IntegrityError(
            f"{where}: the signed index of {index.name} expired at {index.expires} (freeze protection)",
            "the registry may be serving stale data; ask the publisher to run `patchkit index refresh`",
        )


# -- the client's memory of index versions (rollback protection) ------------------------------


def _state_path() -> Path:
    return constants.patchkit_home() / "state" / "index-versions.json"


def _state_key(registry_id: str, name: str) -> str:
    return f"{registry_id} {name}"


def _read_state(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        raw = loads_strict(path.read_bytes(), what=str(path))
    except InvalidInputError:
        raise IntegrityError(f"{path} is corrupt", "remove it only if you know why it changed; it guards against rollback") from None
    return raw if isinstance(raw, dict) else {}


def seen_version(registry_id: str, name: str) -> int:
    """The highest index_version this client has verified for (registry, name); 0 if none."""
    seen = _read_state(_state_path()).get(_state_key(registry_id, name))
    return int(seen.get("index_version", 0)) if isinstance(seen, dict) else 0


def check_and_record(index: Index, data: bytes, registry_id: str, *, where: str) -> None:
    """Rollback attack: refuse an index older than one already seen; remember the newest."""
    path = _state_path()
    key = _state_key(registry_id, index.name)
    digest = hashlib.sha256(data).hexdigest()
    with file_lock(path.with_name(path.name + ".lock")):
        state = _read_state(path)
        seen = state.get(key)
        if isinstance(seen, dict):
            seen_v = int(seen.get("index_version", 0))
            if index.index_version < seen_v:
                raise IntegrityError(
                    f"{where}: the index of {index.name} is version {index.index_version}, older than version "
                    f"{seen_v} seen before (rollback protection)",
                    "the registry is serving old data; try again later or report it to the publisher",
                )
            if index.index_version == seen_v:
                if seen.get("sha256") != digest:
                    raise IntegrityError(
                        f"{where}: the index of {index.name} changed without a new index_version",
                        "the registry served two different indexes with one version; report it to the publisher",
                    )
                return
        state[key] = {"index_version": index.index_version, "sha256": digest, "seen_at": fmt_time(now_utc())}
        atomic_write_text(path, dumps_canonical(state))


__all__ = [
    "DEFAULT_EXPIRES_DAYS",
    "Index",
    "IndexEntry",
    "check_and_record",
    "check_fresh",
    "parse_index",
    "seen_version",
    "sign_index",
    "verify_index",
]
