"""Key logs in a registry: where rotations and revocations are published, and how clients follow them.

Each namespace has one key log: the repository `NS/patchkit-keys` (a reserved patch name),
whose `main` holds `patchkit-keys.json`, an append-only list of signed key statements
(`patchkit.trust.statements`). Every commit of it is also tagged `keys-vN` (N statements), so a
publisher with no saved state still notices a `main` moved back.

A client reads the key log of a name's namespace before it trusts that name's index
(`refresh`), so it learns rotations and revocations with the index:
- it refuses a key log that lacks a statement it saw stand before (rollback protection of its
  own: those digests, per (registry, namespace), are kept in `$PATCHKIT_HOME/state/key-logs.json`,
  and revocations once verified are kept for good in `state/revocations.json`);
- it follows standing rotations in its trust store (within the old key's scopes, never wider,
  recorded in the trust store file) and records standing revocations;
- after the index verifies (`admit`), the index must not name a key statement the log lacks
  (each index binds the statements its publisher saw), and the index's publish times become
  the signing times its artifacts are judged by.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import re
import weakref
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from patchkit import constants
from patchkit._internal.clock import fmt_time, now_utc, parse_utc
from patchkit._internal.files import atomic_write_text, file_lock, lock_for
from patchkit._internal.jsonio import Malformed, dumps_canonical, read_guard_state
from patchkit._internal.records import Record
from patchkit.errors import (
    EndlessDataError,
    IntegrityError,
    InvalidInputError,
    ReadOnlyError,
    RollbackError,
    TrustError,
    UsageError,
)
from patchkit.registry.backends import open_registry
from patchkit.registry.base import Registry
from patchkit.registry.index import Index, IndexEntry
from patchkit.registry.lock import LockEntry
from patchkit.trust.bundles import MAX_SIGNATURE_BYTES, Signed, open_bundle
from patchkit.trust.keys import PrivateKey, PublicKey, keyid_of, load_private_key, load_public_key, public_pem
from patchkit.trust.statements import (
    Envelope,
    Judged,
    Rotation,
    dumps_log,
    follow,
    judge,
    parse_log,
    sign_revocation,
    sign_rotation,
    statement_namespace,
)
from patchkit.trust.store import Handover, TrustEntry, TrustStore, record_revocations

KEYLOG_REPO = "patchkit-keys"
KEYLOG_FILE = "patchkit-keys.json"
# A key log at the statement cap (`statements.MAX_STATEMENTS`) is well under this; a bigger one is
# refused (exit 3) before it is parsed, so a planted log costs a client a bounded amount of work.
MAX_KEYLOG_BYTES = 1024 * 1024
MAX_MEMORY_BYTES = 16 * 1024 * 1024
KEYLOG_TAG_RE = re.compile(r"^keys-v([1-9][0-9]{0,8})$")
# A handover cannot start in the past: that would refuse signatures already made in good faith
# (a compromise is `keys revoke --compromised-since`). This much clock skew is allowed.
MAX_BACKDATE_S = 300


def log_name(namespace: str) -> str:
    return f"{namespace}/{KEYLOG_REPO}"


def is_reserved(name: str) -> bool:
    """Names that hold a namespace's key log or its root-of-trust metadata, never a patch."""
    return name.partition("/")[2] in (KEYLOG_REPO, "patchkit-tuf")


def _refuse_rooted(reg: Registry, namespace: str, what: str) -> None:
    """A namespace with a root of trust changes keys only through its root key holders: a key log
    statement there would be ignored by every client, so publishing one is refused."""
    from patchkit.registry.rooted import has_root

    if has_root(reg, namespace):
        raise UsageError(f"{namespace} has a root of trust in {reg.url}: its keys change only with the root keys, "
                         f"not with `keys {what}`",
                         f"use `patchkit root rotate-key {namespace} --root-key ROOT_PEM --new NEW_PEM` "
                         "(add --compromised-since TIME if the key leaked)")


@dataclass
class KeyLog:
    namespace: str
    envelopes: list[Envelope] = field(default_factory=list)
    judged: Judged = field(default_factory=Judged)
    head: str | None = None
    tags: dict[int, str] = field(default_factory=dict)

    @property
    def digests(self) -> list[str]:
        return [e.digest for e in self.envelopes]

    @property
    def standing(self) -> list[str]:
        """The statements that stand: what a client remembers, and refuses to see dropped."""
        return self.judged.standing


def read_log(reg: Registry, namespace: str, *, verified: set[str] | frozenset[str] = frozenset()) -> KeyLog:
    """The key log of `namespace` at `main`, judged; an empty log when the registry has none."""
    name = log_name(namespace)
    refs = reg.refs(name)
    if refs is None or refs.main is None:
        return KeyLog(namespace)
    tags = {int(m.group(1)): c for t, c in refs.tags.items() if (m := KEYLOG_TAG_RE.match(t))}
    where = f"{reg.url} {name}"
    try:
        data = reg.read(name, refs.main, KEYLOG_FILE, MAX_KEYLOG_BYTES)
    except EndlessDataError:
        raise EndlessDataError(f"{where}: the key log is larger than the cap of {MAX_KEYLOG_BYTES} bytes",
                               "the registry is serving a planted or corrupt key log; refusing it (tell the publisher)") from None
    if data is None:
        return KeyLog(namespace, head=refs.main, tags=tags)
    envelopes, judged = _judged(data, namespace, where, verified)
    return KeyLog(namespace, envelopes, judged, refs.main, tags)


# Logs judged in this process, by their bytes: a command that reads one log several times (publish
# reads it for the publisher's keys, the statements to bind, and the customer's view) judges it once.
_JUDGED_MAX = 8
_judged_memo: dict[tuple[str, str], tuple[list[Envelope], Judged]] = {}


def _judged(data: bytes, namespace: str, where: str, verified: set[str] | frozenset[str]) -> tuple[list[Envelope], Judged]:
    key = (namespace, hashlib.sha256(data).hexdigest())
    hit = _judged_memo.get(key)
    if hit is None:
        envelopes = parse_log(data, namespace=namespace, where=where)
        hit = envelopes, judge(envelopes, namespace=namespace, where=where, verified=verified)
        if len(_judged_memo) >= _JUDGED_MAX:
            _judged_memo.pop(next(iter(_judged_memo)))
        _judged_memo[key] = hit
    return list(hit[0]), hit[1]


# -- the client's memory: statements seen per (registry, namespace), signatures already checked ---


def _memory_path() -> Path:
    return constants.patchkit_home() / "state" / "key-logs.json"


def _memory_shape(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict) or not isinstance(raw.get("logs"), dict) or not isinstance(raw.get("verified"), list):
        raise Malformed("not a key-log memory")
    return raw


def _read_memory() -> dict[str, Any]:
    return read_guard_state(_memory_path(), MAX_MEMORY_BYTES, "restore it; it guards key logs against rollback",
                            missing={"logs": {}, "verified": []}, parse=_memory_shape)


def _remember(key: str, digests: list[str], verified: set[str]) -> None:
    path = _memory_path()
    with contextlib.suppress(ReadOnlyError, OSError), file_lock(path.with_name(path.name + ".lock")):
        state = _read_memory()
        logs: dict[str, Any] = state["logs"]
        known = set(logs.get(key, []))
        known_verified = set(state["verified"])
        if known >= set(digests) and known_verified >= verified:
            return
        logs[key] = sorted(known | set(digests))
        state["verified"] = sorted(known_verified | verified)
        atomic_write_text(path, dumps_canonical(state), mode=0o600)


def _check_no_rollback(log: KeyLog, seen: set[str], where: str) -> None:
    missing = seen - set(log.digests)
    if missing:
        raise RollbackError(
            f"{where}: the key log of namespace {log.namespace} lacks {len(missing)} key statement(s) this client "
            "saw before (rollback protection)",
            "the registry is serving an old key log, which could hide a revocation; try again later or tell the publisher",
        )


_refreshed: weakref.WeakKeyDictionary[Registry, dict[str, KeyLog]] = weakref.WeakKeyDictionary()


def refresh(reg: Registry, name: str, trust: TrustStore) -> KeyLog:
    """Before the index of `name` is trusted: read its namespace's key log, refuse a rolled-back one,
    follow its rotations in `trust` (recorded in the trust store file), and record its revocations.

    Read once per registry object, so a command that checks several names of one namespace pays once.
    """
    namespace = name.partition("/")[0]
    log = _refreshed.setdefault(reg, {}).get(namespace)
    if log is None:
        state = _read_memory()
        key = f"{reg.ident} {namespace}"
        log = read_log(reg, namespace, verified=frozenset(state["verified"]))
        _check_no_rollback(log, set(state["logs"].get(key, [])), f"{reg.url} {log_name(namespace)}")
        _remember(key, log.standing, log.judged.verified & set(log.standing))
        _refreshed[reg][namespace] = log
    found = [r.record() for r in log.judged.revocations]
    if any(trust.revocations.get(r.keyid) != (trust.revocations[r.keyid].stricter(r) if r.keyid in trust.revocations else r)
           for r in found):
        trust.revocations.update(record_revocations(found))
    if follow(trust, log.judged):
        _save_followed(trust, log.judged)
    return log


def _save_followed(store: TrustStore, judged: Judged) -> None:
    """Record followed rotations in the trust store file; a read-only one keeps them for this run."""
    if store.path is None or not store.path.exists():
        return
    with contextlib.suppress(ReadOnlyError, OSError), file_lock(lock_for(store.path)):
        fresh = TrustStore.load(store.path)
        fresh.revocations = store.revocations
        follow(fresh, judged)
        fresh.save()
        store.entries = fresh.entries


def admit(index: Index, signed: Signed, log: KeyLog, trust: TrustStore, *, where: str) -> None:
    """After `index` verified: it must not name a key statement the log lacks (mix-and-match of index
    and key log), and its publish times become the signing times of its artifacts."""
    missing = set(index.keys) - set(log.digests)
    if missing:
        raise RollbackError(
            f"{where}: the signed index of {index.name} names {len(missing)} key statement(s) that the registry's key "
            f"log of {log.namespace} does not serve (rollback protection)",
            "the registry is serving an old key log beside a newer index; try again later or tell the publisher",
        )
    index.attest_to(trust, signed.keyid)


# -- the publisher's side ----------------------------------------------------------------------


def publisher_trust(reg: Registry, name: str, key: PrivateKey) -> TrustStore:
    """The publisher's own key for `name`, and the keys it succeeded there through the namespace's
    key log, each with its handover: what the publisher signed, or its predecessors signed before
    handing over, it may sign again. Revocations are not applied: re-signing is how a publisher
    recovers from one."""
    pub = key.public_key()
    store = TrustStore(None, [TrustEntry(keyid_of(pub), public_pem(pub).decode(), [name], label="--key")])
    log = read_log(reg, name.partition("/")[0])
    # Backwards through the rotations that cover `name`, from the publisher's key: each key once.
    into: dict[str, list[Rotation]] = {}
    for r in log.judged.rotations:
        if any(fnmatch.fnmatchcase(name, s) for s in r.scopes):
            into.setdefault(r.new.keyid, []).append(r)
    known = {keyid_of(pub)}
    todo = [keyid_of(pub)]
    while todo:
        for r in into.get(todo.pop(), []):
            if r.old.keyid not in known:
                known.add(r.old.keyid)
                todo.append(r.old.keyid)
                store.entries.append(TrustEntry(r.old.keyid, r.old.pem, [name], label="the key --key succeeded",
                                                handovers=[Handover(r.new.keyid, [name], r.effective, r.digest)]))
    return store


def bound_statements(reg: Registry, name: str) -> list[str]:
    """What a new index of `name` binds: every statement its namespace's key log holds now."""
    return read_log(reg, name.partition("/")[0]).digests


def _append(reg: Registry, namespace: str, envelope: Envelope, what: str) -> dict[str, Any]:
    name = log_name(namespace)
    where = f"{reg.url} {name}"
    reg.ensure_repo(name)
    with reg.writer_lock(name):
        log = read_log(reg, namespace)
        if log.tags and max(log.tags) > len(log.envelopes):
            raise RollbackError(f"{where}: main holds {len(log.envelopes)} key statement(s), but tag keys-v{max(log.tags)} "
                                "names a longer log: the registry's main was rolled back (rollback protection)",
                                f"restore main to the commit of keys-v{max(log.tags)} before adding a statement; nothing was changed")
        state = _read_memory()
        _check_no_rollback(log, set(state["logs"].get(f"{reg.ident} {namespace}", [])), where)
        if envelope.digest in log.digests:
            return {"namespace": namespace, "statement": envelope.digest, "registry": reg.url, "changed": False}
        envelopes = [*log.envelopes, envelope]
        judged = judge(envelopes, namespace=namespace, where=where)
        if envelope.digest in judged.refused:
            _, reason = judged.refused[envelope.digest]
            raise TrustError(f"{where}: the new {what} would be refused: {reason}", "nothing was changed")
        fell = [judged.refused[d][1] for d in log.judged.verified if d in judged.refused]
        if fell:
            raise TrustError(f"{where}: the new {what} would make an earlier statement fall: {fell[0]}", "nothing was changed")
        commit = reg.commit(name, {KEYLOG_FILE: dumps_log(namespace, envelopes)}, f"keys: {what}", parent=log.head)
        reg.tag(name, f"keys-v{len(envelopes)}", commit)
        _remember(f"{reg.ident} {namespace}", judged.standing, judged.verified & set(judged.standing))
    return {"namespace": namespace, "statement": envelope.digest, "registry": reg.url, "changed": True, "commit": commit}


def _parse_when(text: str | None, flag: str) -> datetime | None:
    if text is None:
        return None
    t = parse_utc(text.strip())
    if t is None:
        raise UsageError(f"{flag} {text!r} is not a UTC time", f"write {flag} 2026-01-31T12:00:00Z (or a date, 2026-01-31)")
    return t


@dataclass(frozen=True)
class RotationResult(Record):
    """A published handover: `new` succeeds `old` for `scopes` from `effective`, one statement per namespace."""

    old: str
    new: str
    scopes: list[str]
    effective: str
    registry: str
    statements: list[dict[str, Any]]  # per namespace: its key log, the statement's digest, whether it was new


@dataclass(frozen=True)
class RevocationResult(Record):
    """A published revocation of `keyid`, signed by `signer`, one statement per namespace."""

    keyid: str
    signer: str
    reason: str
    compromised_since: str | None
    registry: str
    statements: list[dict[str, Any]]


def rotate(old_path: Path, new_path: Path, scopes: list[str], *, registry: str | None = None,
           effective: str | None = None, old_passphrase_env: str | None = None,
           new_passphrase_env: str | None = None) -> RotationResult:
    """Publish "the new key succeeds the old one for `scopes` from `effective`" (default now), signed by both."""
    if not scopes:
        raise UsageError("keys rotate needs at least one --scope", "the names the new key takes over, e.g. --scope 'acme/*'")
    old = load_private_key(old_path, old_passphrase_env)
    new = load_private_key(new_path, new_passphrase_env)
    now = now_utc()
    when = _parse_when(effective, "--effective") or now
    if (now - when).total_seconds() > MAX_BACKDATE_S:
        raise UsageError(f"--effective {fmt_time(when)} is in the past",
                         "a handover starts now or later; for a leaked key use `patchkit keys revoke --compromised-since`")
    by_ns: dict[str, list[str]] = {}
    for s in scopes:
        by_ns.setdefault(statement_namespace(s), []).append(s)
    reg = open_registry(registry)
    for ns in by_ns:
        _refuse_rooted(reg, ns, "rotate")
    published = []
    for ns, ns_scopes in sorted(by_ns.items()):
        env = sign_rotation(old, new, namespace=ns, scopes=ns_scopes, effective=when, issued_at=now)
        published.append(_append(reg, ns, env, f"rotate {keyid_of(old.public_key())[:16]} to {keyid_of(new.public_key())[:16]}"))
    return RotationResult(keyid_of(old.public_key()), keyid_of(new.public_key()), sorted(set(scopes)), fmt_time(when),
                          reg.url, published)


def _revoked_key(path: Path) -> tuple[PublicKey, PrivateKey | None]:
    """KEY as given to `keys revoke`: a public key, or a private one (which may then sign its own revocation)."""
    try:
        return load_public_key(path), None
    except InvalidInputError:
        pass
    try:
        priv = load_private_key(path)
    except (InvalidInputError, UsageError):
        raise InvalidInputError(f"{path} is neither a PEM public key nor an unencrypted PEM private key",
                                "pass the public.pem of the key to revoke, and sign with --key") from None
    return priv.public_key(), priv


def revoke(key_path: Path, reason: str, namespaces: list[str], *, signer_path: Path | None = None,
           compromised_since: str | None = None, registry: str | None = None,
           passphrase_env: str | None = None) -> RevocationResult:
    """Publish a revocation of KEY, signed by KEY itself or by a key that succeeded it, to each namespace's key log."""
    if not namespaces:
        raise UsageError("keys revoke needs at least one --namespace", "the namespaces whose key logs announce it, e.g. --namespace acme")
    revoked, own = _revoked_key(key_path)
    if signer_path is not None:
        signer = load_private_key(signer_path, passphrase_env)
    elif own is not None:
        signer = own
    else:
        raise UsageError("keys revoke needs --key: the private key that signs the revocation",
                         "sign with the revoked key itself (pass its private.pem as KEY) or with the key that succeeded it")
    now = now_utc()
    since = _parse_when(compromised_since, "--compromised-since")
    if since is not None and since > now:
        raise UsageError(f"--compromised-since {fmt_time(since)} is in the future", "give the time the key was first exposed")
    reg = open_registry(registry)
    for ns in set(namespaces):
        _refuse_rooted(reg, ns, "revoke")
    published = []
    for ns in sorted(set(namespaces)):
        statement_namespace(f"{ns}/*")
        env = sign_revocation(revoked, signer, namespace=ns, reason=reason, compromised_since=since, issued_at=now)
        published.append(_append(reg, ns, env, f"revoke {keyid_of(revoked)[:16]}"))
    return RevocationResult(keyid_of(revoked), keyid_of(signer.public_key()), " ".join(reason.split()),
                            fmt_time(since) if since else None, reg.url, published)


# -- a lock that pins a signature the publisher since replaced ---------------------------------


def check_resigned(reg: Registry, pin: LockEntry, entry: IndexEntry, trust: TrustStore) -> None:
    """The index lists the pinned version with the same files but another commit: it was re-signed.

    Say why the pinned signature no longer holds (its key revoked or handed over: TrustError
    with the reason), or, if it still verifies, that the lock pins a replaced signature.
    """
    if entry.commit == pin.commit or entry.digest != pin.digest:
        return
    source = f"the signature {pin.ref} had at commit {pin.commit[:12]}"
    relock = (f"re-lock the re-signed version: `patchkit apply {pin.ref} --model DIR --registry {pin.registry}` "
              f"(or `patchkit upgrade --model DIR`, which moves to the newest version its spec {pin.spec!r} allows)")
    sig = reg.read(pin.name, pin.commit, constants.SIGNATURE_FILE, MAX_SIGNATURE_BYTES)
    if sig is not None:
        statement, signer = open_bundle(sig, trust, source=source)
        if f"sha256:{statement.root_digest}" == pin.digest:
            try:
                trust.authorize(statement.keyid, pin.name, entry=signer, digest=pin.digest)
            except TrustError as exc:
                raise type(exc)(f"{pin.ref}: the lock pins {source}, which its publisher replaced (re-signed at commit "
                                 f"{entry.commit[:12]}): {exc.message}", relock) from None
    raise IntegrityError(f"{pin.ref} was re-signed by its publisher (same files, new signature at commit {entry.commit[:12]}); "
                         f"the lock pins the earlier signature at commit {pin.commit[:12]}", relock)


__all__ = ["KEYLOG_FILE", "KEYLOG_REPO", "KeyLog", "RevocationResult", "RotationResult", "admit", "bound_statements", "check_resigned", "is_reserved",
           "log_name", "publisher_trust", "read_log", "refresh", "revoke", "rotate"]
