"""The signed per-patch index (`patchkit-index.json` + `patchkit-index.sig`) and its TUF checks.

The index is the only thing a client trusts about a registry: which versions exist, at which
commit, with which artifact digest, and whether they are yanked. Each client remembers the
highest `index_version` it has verified per (registry, name), and refuses an older index
(rollback), an expired one (freeze), and an artifact whose digest the index does not list
(mix-and-match).

Each index also carries its `history`: the version and sha256 of every index before it. A
client that saw index N refuses a later index whose history has another digest at N, so a
registry that rolls `main` back and gets a stateless publisher to sign on top of the old
index (a fork) is caught by everyone who saw the lost version.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from patchkit import constants
from patchkit._internal.clock import fmt_time, now_utc, parse_time, parse_utc
from patchkit._internal.files import atomic_write_bytes, atomic_write_text, file_lock, read_regular
from patchkit._internal.jsonio import (
    Malformed,
    dumps_canonical,
    expect_dict,
    expect_int,
    expect_list,
    expect_str,
    loads_strict,
    optional,
    read_guard_state,
    require,
)
from patchkit.errors import FreezeError, IntegrityError, InvalidInputError, ReadOnlyError, RegistryError, RollbackError
from patchkit.registry.ids import commit_id, file_name
from patchkit.trust.bundles import Signed, sign_blobs, sign_blobs_keyless, verify_blobs
from patchkit.trust.keys import PrivateKey
from patchkit.trust.store import TrustStore
from patchkit.version import Version

INDEX_SCHEMA = "patchkit-index/1"
DEFAULT_EXPIRES_DAYS = 30
MAX_INDEX_BYTES = 16 * 1024 * 1024
MAX_INDEX_SIG_BYTES = 1024 * 1024
MAX_BOUND_STATEMENTS = 1024
# One entry per earlier index: a publisher refreshing daily reaches this in 270 years. Parsing and
# checking the history is linear in it; the cap (and MAX_INDEX_BYTES) bounds what a registry can make
# a client read.
MAX_HISTORY_ENTRIES = 100_000


def _index_time(text: str, what: str) -> datetime:
    try:
        return parse_time(text)
    except ValueError:
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
    signed_at: str | None = None  # when the current signature was made, if after publishing (`patchkit resign`)

    @property
    def total_size(self) -> int:
        return sum(self.files.values())

    @property
    def signature_time(self) -> str:
        """What this index attests about when the version's signature was made."""
        return self.signed_at or self.published_at

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "commit": self.commit,
            "digest": self.digest,
            "published_at": self.published_at,
            "files": dict(sorted(self.files.items())),
            "yanked": self.yanked,
            "yank_reason": self.yank_reason,
        }
        if self.signed_at is not None:
            out["signed_at"] = self.signed_at
        return out


@dataclass(frozen=True)
class HistoryEntry:
    """One earlier index: its version and the sha256 of its exact bytes."""

    index_version: int
    sha256: str


@dataclass
class Index:
    name: str
    index_version: int
    expires: str
    versions: dict[str, IndexEntry] = field(default_factory=dict)
    updated_at: str = ""
    history: list[HistoryEntry] = field(default_factory=list)
    # The key statements (sha256 of each payload) of the namespace's key log when this index was
    # signed: a registry that serves this index must serve them too (see registry.keylog).
    keys: list[str] = field(default_factory=list)

    def to_bytes(self) -> bytes:
        body: dict[str, Any] = {
            "schema": INDEX_SCHEMA,
            "name": self.name,
            "index_version": self.index_version,
            "expires": self.expires,
            "updated_at": self.updated_at,
            "versions": {v: e.to_dict() for v, e in sorted(self.versions.items(), key=lambda kv: Version.parse(kv[0]))},
            "history": [{"index_version": h.index_version, "sha256": h.sha256} for h in self.history],
        }
        if self.keys:
            body["keys"] = sorted(self.keys)
        return dumps_canonical(body).encode("utf-8")

    def digest_at(self, index_version: int) -> str | None:
        """The sha256 this index records for an earlier index_version, if its history reaches it."""
        return next((h.sha256 for h in self.history if h.index_version == index_version), None)

    def attest_to(self, trust: TrustStore, signer: str) -> None:
        """Tell `trust` when this index (signed by `signer`) says each artifact was signed."""
        for e in self.versions.values():
            when = parse_utc(e.signature_time)
            if when is not None:
                trust.attest(e.digest, when, signer)

    def sorted_entries(self) -> list[IndexEntry]:
        return sorted(self.versions.values(), key=lambda e: Version.parse(e.version))

    def expiry(self) -> datetime:
        return _index_time(self.expires, f"index of {self.name}")

    def next(self, *, expires_days: int = DEFAULT_EXPIRES_DAYS) -> Index:
        """A copy with `index_version` + 1, a fresh expiry, and this index appended to the history."""
        t = now_utc()
        history = list(self.history)
        if self.index_version > 0:
            history.append(HistoryEntry(self.index_version, hashlib.sha256(self.to_bytes()).hexdigest()))
        return Index(
            name=self.name,
            index_version=self.index_version + 1,
            expires=fmt_time(t + timedelta(days=expires_days)),
            versions={k: IndexEntry(**{**vars(e), "files": dict(e.files)}) for k, e in self.versions.items()},
            updated_at=fmt_time(t),
            history=history,
        )

    @classmethod
    def empty(cls, name: str) -> Index:
        return cls(name=name, index_version=0, expires=fmt_time(now_utc()), versions={}, updated_at="")


_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def _entry(version: str, raw: Any, where: str) -> IndexEntry:
    """One version entry; every field that later builds a path or a URL is validated here."""
    try:
        Version.parse(version)
        files = expect_dict(require(raw, "files"), "files")
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in files.values()):
            raise Malformed("file sizes")
        reason = optional(raw, "yank_reason")
        yanked = require(raw, "yanked")
        signed_at = optional(raw, "signed_at")
        if not isinstance(yanked, bool):
            raise Malformed("yanked")
        if signed_at is not None:
            _index_time(expect_str(signed_at, "signed_at"), f"{where}: version {version[:40]!r} signed_at")
        e = IndexEntry(
            version=version,
            commit=commit_id(require(raw, "commit"), where=f"{where}: version {version[:40]!r}", error=IntegrityError),
            digest=str(require(raw, "digest")),
            published_at=str(require(raw, "published_at")),
            files={file_name(k, where=f"{where}: version {version[:40]!r}", error=IntegrityError): n
                   for k, n in files.items()},
            yanked=yanked,
            yank_reason=str(reason) if reason is not None else None,
            signed_at=signed_at,
        )
    except (Malformed, InvalidInputError):
        raise IntegrityError(f"{where}: malformed entry for version {version[:40]!r}",
                             "the index is corrupt; ask the publisher to re-sign it") from None
    if not _DIGEST_RE.match(e.digest):
        raise IntegrityError(f"{where}: entry {version} lacks a sha256:<64 hex> artifact digest", "the index is corrupt")
    return e


def _history(raw: Any, index_version: int, where: str) -> list[HistoryEntry]:
    """Strictly increasing earlier versions, each with a sha256; absent in indexes before 0.2."""
    if raw is None:
        return []
    raw = expect_list(raw, "history")
    if len(raw) > MAX_HISTORY_ENTRIES:
        raise IntegrityError(f"{where}: the index history holds {len(raw)} entries, over the cap of {MAX_HISTORY_ENTRIES}",
                             "the index is corrupt or planted; tell the publisher")
    out: list[HistoryEntry] = []
    for item in raw:
        v, digest = require(item, "index_version"), require(item, "sha256")
        v, digest = expect_int(v, "index_version"), expect_str(digest, "sha256")
        if not _SHA256_RE.match(digest):
            raise Malformed("sha256")
        if v >= index_version or (out and v <= out[-1].index_version) or v < 1:
            raise IntegrityError(f"{where}: the index history is out of order", "the index is corrupt")
        out.append(HistoryEntry(v, digest))
    return out


def _bound_keys(raw: Any, where: str) -> list[str]:
    """The key statements an index binds; absent before patchkit 0.2."""
    if raw is None:
        return []
    if not isinstance(raw, list) or len(raw) > MAX_BOUND_STATEMENTS or not all(
            isinstance(d, str) and _SHA256_RE.match(d) for d in raw):
        raise IntegrityError(f"{where}: malformed key statement list", "the index is corrupt")
    return list(raw)


def parse_index(data: bytes, *, where: str) -> Index:
    try:
        raw = loads_strict(data, what=where)
    except InvalidInputError as exc:
        raise IntegrityError(exc.message, "the index is corrupt; ask the publisher to re-sign it") from None
    try:
        if require(raw, "schema") != INDEX_SCHEMA:
            raise IntegrityError(f"{where}: unknown index schema {raw['schema']!r}", "upgrade patchkit")
        iv = expect_int(require(raw, "index_version"), "index_version")
        if iv < 1:
            raise Malformed("index_version")
        versions = expect_dict(require(raw, "versions"), "versions")
        idx = Index(
            name=str(require(raw, "name")),
            index_version=iv,
            expires=str(require(raw, "expires")),
            versions={v: _entry(v, e, where) for v, e in versions.items()},
            updated_at=str(optional(raw, "updated_at", "")),
            history=_history(optional(raw, "history"), iv, where),
            keys=_bound_keys(optional(raw, "keys"), where),
        )
    except Malformed:
        raise IntegrityError(f"{where}: malformed index", "the index is corrupt; ask the publisher to re-sign it") from None
    idx.expiry()
    return idx


def sign_index(index: Index, key: PrivateKey, *, chain: list[bytes] | None = None) -> tuple[bytes, bytes]:
    """(index bytes, signature bytes): a model-signing bundle over the one index file (with `chain`,
    in the certificate method, so customers who trust only the organisation's CA can verify it)."""
    data = index.to_bytes()
    return data, sign_blobs(index.name, {constants.INDEX_FILE: data}, key, sig_name=constants.INDEX_SIG_FILE, chain=chain)


def sign_index_keyless(index: Index, token: str) -> tuple[bytes, bytes]:
    """(index bytes, signature bytes): a keyless (Sigstore) bundle over the one index file, as the
    identity of `token`; customers verify it with `trust add-identity` entries, like a keyless patch."""
    data = index.to_bytes()
    return data, sign_blobs_keyless(index.name, {constants.INDEX_FILE: data}, token, sig_name=constants.INDEX_SIG_FILE)


def _stated_time(files: Mapping[str, bytes]) -> datetime | None:
    """The `updated_at` a signed index states: the only time it carries for its own signature."""
    try:
        raw = loads_strict(files[constants.INDEX_FILE], what="index")
    except InvalidInputError:
        return None
    return parse_utc(raw.get("updated_at")) if isinstance(raw, dict) else None


def verify_index(data: bytes, sig: bytes | None, trust: TrustStore, name: str, *, where: str) -> tuple[Index, Signed]:
    """Signature, trust and scope for `name`, then content: the index names the patch asked for."""
    if sig is None:
        raise IntegrityError(f"{where}: the index is not signed ({constants.INDEX_SIG_FILE} is missing)",
                             "refusing an unsigned index; ask the publisher to run `patchkit index refresh`")
    signed = verify_blobs(sig, {constants.INDEX_FILE: data}, trust, name, source=f"{where} {constants.INDEX_SIG_FILE}",
                          dated=_stated_time)
    index = parse_index(data, where=where)
    if index.name != name:
        raise IntegrityError(f"{where}: the index is for {index.name!r}, not {name!r}", "the registry served another patch's index")
    return index, signed


def refresh_hint(name: str, registry_url: str) -> str:
    """What ends a freeze: a re-signed index, or reaching the registry again."""
    return (f"the publisher must run `patchkit index refresh {name}`, or the registry is unreachable: reconnect to "
            f"{registry_url} and run the command again (offline, a pin is accepted only until the last index seen expires)")


def check_fresh(index: Index, *, where: str, now: datetime | None = None, registry_url: str | None = None) -> None:
    """Freeze attack: an index past its expiry is refused."""
    t = now or now_utc()
    if index.expiry() <= t:
        raise FreezeError(
            f"{where}: the registry's signed index for {index.name} expired at {index.expires} (freeze protection)",
            refresh_hint(index.name, registry_url) if registry_url else
            "the registry may be serving stale data; ask the publisher to run `patchkit index refresh`",
        )


def fresh_evidence(index: Index | None, *, name: str, registry_url: str, where: str, cause: str,
                   now: datetime | None = None, hint: str | None = None) -> Index:
    """The evidence a pin needs when the registry's current index cannot be had: `index`, the newest
    signed index this client verified for the pin's (registry, name) (`remembered_index`), still
    unexpired at `now`. `cause` says, as a clause, why the current one cannot be had; `hint`, if
    given, replaces the default remedy.

    Offline use within that expiry is legitimate: the index is what the publisher last signed, and
    its expiry bounds how long it may stand in for the current one. Past it, a revocation or a yank
    may be hidden (a frozen registry, or one that is gone): FreezeError (exit 3). With no index ever
    seen, nothing vouches for the pin's yank and revocation state: RegistryError (exit 8).
    """
    if index is None:
        raise RegistryError(
            f"{where}: {cause}, and this machine has never verified a signed index of {name} from {registry_url}",
            hint or f"reach the registry once (`patchkit apply --frozen --model DIR` or `patchkit verify --lock FILE` while "
            f"{registry_url} is reachable): a pin is accepted only with a current signed index, which says whether it was "
            "yanked or its key revoked",
        )
    if index.expiry() <= (now or now_utc()):
        raise FreezeError(
            f"{where}: the registry's signed index for {name} expired at {index.expires} (freeze protection), and {cause}",
            hint or refresh_hint(name, registry_url),
        )
    return index


# -- the client's memory of index versions (rollback protection) ------------------------------


def _state_path() -> Path:
    return constants.patchkit_home() / "state" / "index-versions.json"


def _state_key(registry_id: str, name: str) -> str:
    return f"{registry_id} {name}"


MAX_STATE_BYTES = 64 * 1024 * 1024


def _read_state(path: Path) -> dict[str, Any]:
    return read_guard_state(path, MAX_STATE_BYTES, "remove it only if you know why it changed; it guards against rollback",
                            missing={}, parse=lambda raw: raw if isinstance(raw, dict) else {})


def _remembered_paths(registry_id: str, name: str) -> tuple[Path, Path]:
    key = hashlib.sha256(_state_key(registry_id, name).encode()).hexdigest()[:32]
    base = constants.patchkit_home() / "state" / "indexes"
    return base / f"{key}.json", base / f"{key}.sig"


def remember_index(registry_id: str, name: str, data: bytes, sig: bytes | None) -> None:
    """Keep the last verified index, so offline commands (`status`) can still report yanks."""
    if sig is None:
        return  # (b"" marks an index a root of trust vouched for: it is kept, and re-checked against that)
    data_path, sig_path = _remembered_paths(registry_id, name)
    with contextlib.suppress(ReadOnlyError, OSError):
        atomic_write_bytes(sig_path, sig, mode=0o600)
        atomic_write_bytes(data_path, data, mode=0o600)


def remembered_index(registry_id: str, name: str, trust: TrustStore) -> Index | None:
    """The last index verified for (registry, name), re-verified against `trust`; None if none is kept.

    Freshness is not checked (this is what was true when last seen), but the signature is,
    and the copy must be the version this client last recorded, so it cannot be swapped.
    """
    data_path, sig_path = _remembered_paths(registry_id, name)
    try:
        data = read_regular(data_path, MAX_INDEX_BYTES, error=IntegrityError)
        sig = read_regular(sig_path, MAX_INDEX_SIG_BYTES, error=IntegrityError)
    except FileNotFoundError:
        return None
    seen = _read_state(_state_path()).get(_state_key(registry_id, name))
    if not isinstance(seen, dict) or seen.get("sha256") != hashlib.sha256(data).hexdigest():
        return None
    index, signed = verify_index(data, sig, trust, name, where=f"the remembered index of {name}")
    index.attest_to(trust, signed.keyid)
    return index


def remembered_bytes(registry_id: str, name: str) -> bytes | None:
    """The remembered index's bytes, if they are the version this client last recorded (a root of
    trust re-checks them against its cached metadata: `patchkit.registry.rooted.remembered_index`)."""
    data_path, _ = _remembered_paths(registry_id, name)
    try:
        data = read_regular(data_path, MAX_INDEX_BYTES, error=IntegrityError)
    except FileNotFoundError:
        return None
    seen = _read_state(_state_path()).get(_state_key(registry_id, name))
    return data if isinstance(seen, dict) and seen.get("sha256") == hashlib.sha256(data).hexdigest() else None


def seen_version(registry_id: str, name: str) -> int:
    """The highest index_version this client has verified for (registry, name); 0 if none."""
    seen = _read_state(_state_path()).get(_state_key(registry_id, name))
    return int(seen.get("index_version", 0)) if isinstance(seen, dict) else 0


def check_and_record(index: Index, data: bytes, registry_id: str, *, where: str) -> None:
    """Rollback attack: refuse an index older than one already seen, or one whose history
    rewrites the version seen; remember the newest. A read-only home still checks, and says
    that it could not record."""
    path = _state_path()
    key = _state_key(registry_id, index.name)
    digest = hashlib.sha256(data).hexdigest()
    if _seen_ok(_read_state(path).get(key), index, digest, where):
        return
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(file_lock(path.with_name(path.name + ".lock")))
        except ReadOnlyError:
            return  # a read-only PATCHKIT_HOME: the check above passed, and there is nowhere to record
        state = _read_state(path)
        if _seen_ok(state.get(key), index, digest, where):
            return
        state[key] = {"index_version": index.index_version, "sha256": digest, "seen_at": fmt_time(now_utc())}
        atomic_write_text(path, dumps_canonical(state), mode=0o600)


def _seen_ok(seen: Any, index: Index, digest: str, where: str) -> bool:
    """True when `index` is exactly the one already recorded; raises on rollback or a fork."""
    if not isinstance(seen, dict):
        return False
    seen_v = seen.get("index_version", 0)
    seen_sha = seen.get("sha256")
    if not isinstance(seen_v, int) or not isinstance(seen_sha, str):
        raise IntegrityError(f"{_state_path()} is corrupt", "remove it only if you know why it changed; it guards against rollback")
    if index.index_version < seen_v:
        raise RollbackError(
            f"{where}: the index of {index.name} is version {index.index_version}, older than version "
            f"{seen_v} seen before (rollback protection)",
            "the registry is serving old data; try again later or report it to the publisher",
        )
    if index.index_version == seen_v:
        if seen_sha != digest:
            raise RollbackError(
                f"{where}: the index of {index.name} changed without a new index_version (rollback protection)",
                "the registry served two different indexes with one version; report it to the publisher",
            )
        return True
    recorded = index.digest_at(seen_v)
    if recorded is not None and recorded != seen_sha:
        raise RollbackError(
            f"{where}: the index history of {index.name} was rewritten: version {seen_v}, seen before, is not the "
            f"one this index ({index.index_version}) descends from (rollback protection)",
            "the registry's history was rolled back and re-signed on top of an old index; tell the publisher",
        )
    return False


__all__ = [
    "DEFAULT_EXPIRES_DAYS",
    "MAX_HISTORY_ENTRIES",
    "HistoryEntry",
    "Index",
    "IndexEntry",
    "check_and_record",
    "check_fresh",
    "fresh_evidence",
    "parse_index",
    "refresh_hint",
    "remember_index",
    "remembered_bytes",
    "remembered_index",
    "seen_version",
    "sign_index",
    "sign_index_keyless",
    "verify_index",
]
