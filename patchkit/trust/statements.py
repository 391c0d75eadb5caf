"""Key lifecycle statements: rotation ("B succeeds A for scope S from T") and revocation.

Each statement is a DSSE envelope whose payload is canonical JSON of type
`application/vnd.patchkit.key-statement+json`, with one signature per key that signs it:
- a rotation is signed by both the old and the new key (a statement signed by the new key
  alone proves nothing about the old one);
- a revocation is signed by the revoked key itself, or by a key that succeeded it through
  valid rotations.
A statement names the namespace whose key log holds it, so it cannot be replayed into the log
of another namespace, and its scopes must lie inside that namespace.

This module judges statements (signatures, shape, forks, which rotations a revocation leaves
standing) and applies rotations to a trust store. Fetching them from a registry, and the
rollback memory for them, is `patchkit.registry.keylog`.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import heapq
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from patchkit._internal.clock import fmt_time, parse_utc
from patchkit._internal.jsonio import (
    Malformed,
    dumps_canonical,
    expect_dict,
    expect_list,
    expect_str,
    loads_strict,
    require,
)
from patchkit.errors import IntegrityError, InvalidInputError, UsageError
from patchkit.manifest import NAME_PART
from patchkit.trust.bundles import pae
from patchkit.trust.keys import PrivateKey, PublicKey, keyid_of, parse_public_key, public_pem
from patchkit.trust.store import (
    Handover,
    Revoked,
    TrustEntry,
    TrustStore,
    narrow_scopes,
    scopes_may_overlap,
    validate_scope,
)

PAYLOAD_TYPE = "application/vnd.patchkit.key-statement+json"
STATEMENT_SCHEMA = "patchkit-key-statement/1"
LOG_SCHEMA = "patchkit-keys/1"
MAX_STATEMENT_BYTES = 64 * 1024
# Hard caps on one namespace's key log. A legitimate log holds a rotation or revocation every
# few months, each naming a handful of scopes; these leave decades of room, and keep what a
# planted log can cost a client bounded (judging is linear in the log, and the few pairwise
# scope comparisons that remain are bounded by the scope cap).
MAX_STATEMENTS = 256
MAX_LOG_SCOPES = 512  # scopes named by all the rotations of one log together
MAX_REASON_CHARS = 500
_GLOB = set("*?[")
_NAMESPACE_RE = re.compile(rf"^{NAME_PART}$")


@dataclass(frozen=True)
class KeyRef:
    keyid: str
    pem: str

    @classmethod
    def of(cls, key: PublicKey) -> KeyRef:
        return cls(keyid_of(key), public_pem(key).decode())

    def key(self) -> PublicKey:
        return parse_public_key(self.pem.encode(), f"key {self.keyid[:16]}")

    def to_dict(self) -> dict[str, str]:
        return {"keyid": self.keyid, "public_key": self.pem}


@dataclass(frozen=True)
class Rotation:
    digest: str  # sha256 of the payload: the statement's identity
    namespace: str
    old: KeyRef
    new: KeyRef
    scopes: tuple[str, ...]
    effective: datetime
    issued_at: datetime

    def describe(self) -> str:
        return (f"rotation {self.old.keyid[:16]}… -> {self.new.keyid[:16]}… for {', '.join(self.scopes)} "
                f"from {fmt_time(self.effective)}")


@dataclass(frozen=True)
class Revocation:
    digest: str
    namespace: str
    key: KeyRef
    signer: KeyRef
    reason: str
    compromised_since: datetime | None
    issued_at: datetime

    def record(self) -> Revoked:
        return Revoked(self.key.keyid, self.reason, self.compromised_since, self.digest, self.signer.keyid,
                       fmt_time(self.issued_at))


Statement = Rotation | Revocation


@dataclass(frozen=True)
class Envelope:
    payload: bytes
    signatures: tuple[tuple[str, bytes], ...]  # (keyid, DER ECDSA signature)

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.payload).hexdigest()

    def signed_by(self, ref: KeyRef) -> bool:
        """A valid signature by `ref` over the payload (the keyid hint only picks which to try)."""
        key = ref.key()
        for keyid, sig in self.signatures:
            if keyid != ref.keyid:
                continue
            try:
                key.verify(sig, pae(self.payload, PAYLOAD_TYPE), ec.ECDSA(hashes.SHA256()))
                return True
            except InvalidSignature:
                continue
        return False

    def to_dict(self) -> dict[str, Any]:
        return {"payloadType": PAYLOAD_TYPE, "payload": base64.b64encode(self.payload).decode(),
                "signatures": [{"keyid": k, "sig": base64.b64encode(s).decode()} for k, s in self.signatures]}


def _envelope(body: dict[str, Any], signers: Iterable[PrivateKey]) -> Envelope:
    payload = dumps_canonical(body).encode("utf-8")
    sigs = tuple((keyid_of(k.public_key()), k.sign(pae(payload, PAYLOAD_TYPE), ec.ECDSA(hashes.SHA256()))) for k in signers)
    return Envelope(payload, sigs)


def statement_namespace(scope: str) -> str:
    """The literal namespace of a scope; a rotation is published per namespace, so it needs one."""
    ns, _, _ = validate_scope(scope).partition("/")
    if not _NAMESPACE_RE.match(ns) or ".." in ns:
        raise UsageError(f"scope {scope!r} has no literal namespace", "rotate per namespace, e.g. --scope 'acme/*'")
    return ns


def sign_rotation(old: PrivateKey, new: PrivateKey, *, namespace: str, scopes: list[str], effective: datetime,
                  issued_at: datetime) -> Envelope:
    if keyid_of(old.public_key()) == keyid_of(new.public_key()):
        raise UsageError("--old and --new are the same key", "generate a new key with `patchkit keys generate`")
    for s in scopes:
        if statement_namespace(s) != namespace:
            raise UsageError(f"scope {s!r} is not in namespace {namespace}", "one statement covers one namespace")
    body = {"schema": STATEMENT_SCHEMA, "type": "rotation", "namespace": namespace,
            "old": KeyRef.of(old.public_key()).to_dict(), "new": KeyRef.of(new.public_key()).to_dict(),
            "scopes": sorted(set(scopes)), "effective": fmt_time(effective), "issued_at": fmt_time(issued_at)}
    return _envelope(body, (old, new))


def sign_revocation(revoked: PublicKey, signer: PrivateKey, *, namespace: str, reason: str,
                    compromised_since: datetime | None, issued_at: datetime) -> Envelope:
    reason = " ".join(reason.split())
    if not reason:
        raise UsageError("keys revoke needs a --reason", "say why the key must no longer be trusted; customers see it")
    if len(reason) > MAX_REASON_CHARS:
        raise UsageError(f"--reason is longer than {MAX_REASON_CHARS} characters", "say it in one line")
    body = {"schema": STATEMENT_SCHEMA, "type": "revocation", "namespace": namespace,
            "key": KeyRef.of(revoked).to_dict(), "signer": KeyRef.of(signer.public_key()).to_dict(),
            "reason": reason, "compromised_since": fmt_time(compromised_since) if compromised_since else None,
            "issued_at": fmt_time(issued_at)}
    return _envelope(body, (signer,))


# -- reading ----------------------------------------------------------------------------------


def _b64(value: Any, what: str, where: str) -> bytes:
    text = expect_str(value, what)
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise IntegrityError(f"{where}: {what} is not valid base64", "the key log is corrupt") from None


def parse_envelope(raw: Any, where: str) -> Envelope:
    try:
        if require(raw, "payloadType") != PAYLOAD_TYPE:
            raise IntegrityError(f"{where}: not a patchkit key statement", "the key log is corrupt")
        payload = _b64(require(raw, "payload"), "payload", where)
        sigs = expect_list(require(raw, "signatures"), "signatures", min_len=1, max_len=4)
        out = tuple((str(require(s, "keyid")), _b64(require(s, "sig"), "signature", where)) for s in sigs)
    except Malformed:
        raise IntegrityError(f"{where}: malformed key statement", "the key log is corrupt") from None
    if len(payload) > MAX_STATEMENT_BYTES:
        raise IntegrityError(f"{where}: a key statement is larger than one can be", "the key log is corrupt")
    return Envelope(payload, out)


def _keyref(raw: Any, where: str) -> KeyRef:
    pem = str(require(raw, "public_key"))
    key = parse_public_key(pem.encode(), where)
    ref = KeyRef.of(key)
    if ref.keyid != require(raw, "keyid"):
        raise IntegrityError(f"{where}: a keyid does not match its key", "the key log is corrupt")
    return ref


def _time(raw: Any, what: str, where: str) -> datetime:
    t = parse_utc(raw)
    if t is None:
        raise IntegrityError(f"{where}: {what} {str(raw)[:40]!r} is not a UTC time", "the key log is corrupt")
    return t


def decode(env: Envelope, where: str) -> Statement:
    """The statement an envelope carries (shape only: signatures are judged by `judge`)."""
    try:
        body = expect_dict(loads_strict(env.payload, what=where), "key statement")
        if require(body, "schema") != STATEMENT_SCHEMA:
            raise IntegrityError(f"{where}: unknown key statement schema {str(body['schema'])[:40]!r}", "upgrade patchkit")
        ns = str(require(body, "namespace"))
        if not _NAMESPACE_RE.match(ns):
            raise Malformed(f"namespace {ns[:40]!r}")
        kind = require(body, "type")
        if kind == "rotation":
            scopes = expect_list(require(body, "scopes"), "scopes", min_len=1, max_len=64)
            return Rotation(env.digest, ns, _keyref(require(body, "old"), where), _keyref(require(body, "new"), where),
                            tuple(str(s) for s in scopes), _time(require(body, "effective"), "effective", where),
                            _time(require(body, "issued_at"), "issued_at", where))
        if kind == "revocation":
            reason = expect_str(require(body, "reason"), "reason")
            since = body.get("compromised_since")
            if not reason or len(reason) > MAX_REASON_CHARS:
                raise Malformed("reason")
            return Revocation(env.digest, ns, _keyref(require(body, "key"), where), _keyref(require(body, "signer"), where),
                              reason, None if since is None else _time(since, "compromised_since", where),
                              _time(require(body, "issued_at"), "issued_at", where))
        raise IntegrityError(f"{where}: unknown key statement type {str(kind)[:40]!r}", "upgrade patchkit")
    except (Malformed, InvalidInputError):
        raise IntegrityError(f"{where}: malformed key statement", "the key log is corrupt") from None


def parse_log(data: bytes, *, namespace: str, where: str) -> list[Envelope]:
    """The envelopes of one namespace's key log file (`patchkit-keys.json`), bounded."""
    try:
        raw = loads_strict(data, what=where)
        if require(raw, "schema") != LOG_SCHEMA:
            raise IntegrityError(f"{where}: unknown key log schema", "upgrade patchkit")
        if require(raw, "namespace") != namespace:
            raise IntegrityError(f"{where}: the key log is for namespace {str(raw['namespace'])[:40]!r}, not {namespace!r}",
                                 "the registry served another namespace's key log")
        items = expect_list(require(raw, "statements"), "statements")
    except (Malformed, InvalidInputError):
        raise IntegrityError(f"{where}: malformed key log", "the key log is corrupt") from None
    if len(items) > MAX_STATEMENTS:
        raise IntegrityError(f"{where}: more than {MAX_STATEMENTS} key statements", "the key log is corrupt")
    return [parse_envelope(x, f"{where} statement #{i + 1}") for i, x in enumerate(items)]


def dumps_log(namespace: str, envelopes: list[Envelope]) -> bytes:
    return dumps_canonical({"schema": LOG_SCHEMA, "namespace": namespace,
                            "statements": [e.to_dict() for e in envelopes]}).encode("utf-8")


# -- judging a log ----------------------------------------------------------------------------


_may_overlap = scopes_may_overlap


def overlaps(a: Iterable[str], b: Iterable[str]) -> bool:
    index = ScopeIndex()
    for y in b:
        index.add(y, "b")
    return any(index.overlaps(x, "a") for x in a)


def _is_glob(text: str) -> bool:
    return bool(_GLOB & set(text))


class ScopeIndex:
    """Scopes, each held by an owner (a key), answering "could this scope overlap one held by another
    owner?" as `_may_overlap` would, without comparing every pair.

    Comparing every scope of every rotation with every other one made judging a planted key log
    quadratic (a 130 KB log cost a client half a minute). Here a literal scope is one dict look-up,
    a glob against the globs of its namespace is one count, and only a literal against the globs of
    its namespace (or a glob against its literals) still scans, which the log's scope cap bounds.
    """

    def __init__(self) -> None:
        self._literal: dict[str, dict[str, set[str]]] = {}  # namespace -> literal name -> owners
        self._globs: dict[str, list[tuple[str, str]]] = {}  # namespace -> (glob name, owner)
        self._glob_owners: dict[str, dict[str, int]] = {}  # namespace -> owner -> glob names held
        self._wild: list[tuple[str, str]] = []  # (scope, owner) whose namespace is itself a glob

    def add(self, scope: str, owner: str) -> None:
        ns, _, name = scope.partition("/")
        if _is_glob(ns):
            self._wild.append((scope, owner))
        elif _is_glob(name):
            self._globs.setdefault(ns, []).append((name, owner))
            counts = self._glob_owners.setdefault(ns, {})
            counts[owner] = counts.get(owner, 0) + 1
        else:
            self._literal.setdefault(ns, {}).setdefault(name, set()).add(owner)

    def overlaps(self, scope: str, owner: str) -> bool:
        """True if `scope` may overlap a scope some other owner holds."""
        ns, _, name = scope.partition("/")
        if any(o != owner and _may_overlap(scope, s) for s, o in self._wild):
            return True
        if _is_glob(ns):
            return any(o != owner and _may_overlap(scope, f"{n}/{x}")
                       for n, names in self._literal.items() for x, owners in names.items() for o in owners) or any(
                o != owner and _may_overlap(scope, f"{n}/{g}") for n, globs in self._globs.items() for g, o in globs)
        literal = self._literal.get(ns, {})
        globs = self._globs.get(ns, [])
        if _is_glob(name):
            counts = self._glob_owners.get(ns, {})
            if len(counts) > 1 or (counts and owner not in counts):
                return True  # two globs in one namespace may always overlap
            return any(fnmatch.fnmatchcase(x, name) and owners - {owner} for x, owners in literal.items())
        if literal.get(name, set()) - {owner}:
            return True
        return any(o != owner and fnmatch.fnmatchcase(name, g) for g, o in globs)


@dataclass
class Judged:
    """What a namespace's key log establishes: the rotations and revocations that stand, and why others fell."""

    rotations: list[Rotation] = field(default_factory=list)
    revocations: list[Revocation] = field(default_factory=list)
    refused: dict[str, tuple[Statement, str]] = field(default_factory=dict)  # digest -> (statement, reason)
    verified: set[str] = field(default_factory=set)  # digests whose signatures checked out
    _reach: dict[str, set[str]] = field(default_factory=dict, repr=False, compare=False)

    @property
    def standing(self) -> list[str]:
        """The digests of the statements that stand."""
        return [r.digest for r in self.rotations] + [r.digest for r in self.revocations]

    def successors(self, keyid: str) -> set[str]:
        """Every key reachable from `keyid` through standing rotations (memoised: judging asks per statement)."""
        if keyid in self._reach:
            return self._reach[keyid]
        out_of: dict[str, list[str]] = {}
        for r in self.rotations:
            out_of.setdefault(r.old.keyid, []).append(r.new.keyid)
        seen: set[str] = set()
        todo = [keyid]
        while todo:
            for k in out_of.get(todo.pop(), []):
                if k not in seen:
                    seen.add(k)
                    todo.append(k)
        self._reach[keyid] = seen
        return seen


def _rotation_problem(r: Rotation, env: Envelope, namespace: str, trusted_sigs: bool) -> str | None:
    if r.old.keyid == r.new.keyid:
        return "it rotates a key to itself"
    for s in r.scopes:
        try:
            validate_scope(s)
        except UsageError:
            return f"it claims a malformed scope {s[:60]!r}"
        try:
            inside = statement_namespace(s) == namespace
        except UsageError:
            inside = False
        if not inside:
            return f"it claims scope {s!r}, outside namespace {namespace}: a rotation never widens a key's scope"
    if not trusted_sigs:
        if not env.signed_by(r.old):
            return "it is not signed by the old key (a rotation must be signed by both keys)"
        if not env.signed_by(r.new):
            return "it is not signed by the new key (a rotation must be signed by both keys)"
    return None


def _merged(envelopes: list[Envelope]) -> list[Envelope]:
    """One envelope per statement, holding every signature any copy of it carries (first-seen order).

    A statement's identity is its payload's digest, so two copies of one statement are the same
    statement: a copy with a broken signature must not shadow the one whose signature verifies
    (a mirror with no key could otherwise hide a revocation by serving a damaged copy first).
    The signatures are bounded by the log's caps (statements and bytes), so this stays linear.
    """
    merged: dict[str, Envelope] = {}
    for env in envelopes:
        have = merged.get(env.digest)
        if have is None:
            merged[env.digest] = env
        else:
            extra = tuple(s for s in env.signatures if s not in have.signatures)
            merged[env.digest] = Envelope(have.payload, have.signatures + extra)
    return list(merged.values())


def judge(envelopes: list[Envelope], *, namespace: str, where: str, verified: set[str] | frozenset[str] = frozenset()) -> Judged:
    """Decide which statements of one namespace's log stand.

    `verified` holds digests whose signatures were checked before (the client's memory), so a
    log seen before costs no signature checks. The rules, in order: a statement must be for this
    namespace and properly signed; two rotations out of one key with overlapping scopes are a
    fork and both fall; a revocation must be signed by the key or a successor of it; and a
    rotation out of a revoked key stands only on the way to the key that revoked it.
    """
    out = Judged()
    candidates: list[tuple[Statement, Envelope]] = []
    for i, env in enumerate(_merged(envelopes)):
        st = decode(env, f"{where} statement #{i + 1}")
        if st.namespace != namespace:
            out.refused[env.digest] = (st, f"it was issued for the key log of namespace {st.namespace}, not {namespace} "
                                           "(a replayed statement)")
            continue
        candidates.append((st, env))
    scopes = sum(len(st.scopes) for st, _ in candidates if isinstance(st, Rotation))
    if scopes > MAX_LOG_SCOPES:
        raise IntegrityError(f"{where}: its rotations name {scopes} scopes, over the cap of {MAX_LOG_SCOPES} per key log",
                             "the key log is corrupt or planted; tell the publisher")
    trusted = set(verified)
    rotations: list[Rotation] = []
    for st, env in candidates:
        if isinstance(st, Rotation):
            problem = _rotation_problem(st, env, namespace, env.digest in trusted)
            if problem:
                out.refused[st.digest] = (st, problem)
            else:
                out.verified.add(st.digest)
                rotations.append(st)
    by_old: dict[str, list[Rotation]] = {}
    for r in rotations:
        by_old.setdefault(r.old.keyid, []).append(r)
    for group in by_old.values():
        if len({r.new.keyid for r in group}) < 2:
            continue
        index = ScopeIndex()
        for r in group:
            for sc in r.scopes:
                index.add(sc, r.new.keyid)
        for r in group:
            if any(index.overlaps(sc, r.new.keyid) for sc in r.scopes):
                rival = next(o for o in group if o.new.keyid != r.new.keyid and overlaps(o.scopes, r.scopes))
                out.refused[r.digest] = (r, f"key {r.old.keyid[:16]}… also hands the same names to "
                                            f"{rival.new.keyid[:16]}… (a forked or replayed rotation)")
    out.rotations = [r for r in rotations if r.digest not in out.refused]
    revocations: list[Revocation] = []
    for st, env in candidates:
        if not isinstance(st, Revocation):
            continue
        if st.signer.keyid != st.key.keyid and st.signer.keyid not in out.successors(st.key.keyid):
            out.refused[st.digest] = (st, "it is signed neither by the key itself nor by a key that succeeded it")
        elif env.digest not in trusted and not env.signed_by(st.signer):
            out.refused[st.digest] = (st, "its signature does not verify")
        else:
            out.verified.add(st.digest)
            revocations.append(st)
    out.revocations = revocations
    revokers: dict[str, set[str]] = {}
    for rv in revocations:
        revokers.setdefault(rv.key.keyid, set()).add(rv.signer.keyid)
    kept: list[Rotation] = []
    for r in out.rotations:
        signers = revokers.get(r.old.keyid)
        if signers is None or any(s == r.new.keyid or s in out.successors(r.new.keyid) for s in signers):
            kept.append(r)
        else:
            out.refused[r.digest] = (r, f"key {r.old.keyid[:16]}… was revoked, and this rotation does not lead to the key "
                                        "that revoked it")
    out.rotations = kept
    out._reach.clear()  # the memo was of the rotations before revocations pruned them
    return out


# -- following rotations in a trust store -----------------------------------------------------


def _successor_label(old: TrustEntry) -> str:
    return f"{old.label or old.keyid[:16]} (rotated)"


def follow(store: TrustStore, judged: Judged) -> bool:
    """Apply standing rotations to `store`: a successor gets the part of its predecessor's scopes the
    rotation names, never more, and the predecessor records the handover. True if anything changed.

    Chains are followed (A -> B -> C); a rotation already recorded is a no-op, so replaying an old
    one changes nothing; a rotation out of a key that already handed the same names to another
    key is refused (a fork), and so is one to a revoked key.
    """
    changed = False
    for st, reason in judged.refused.values():
        if isinstance(st, Rotation):
            store.notes.setdefault(st.new.keyid, f"the key log of {st.namespace} has a {st.describe()}, refused: {reason}")
    # A work list in time order rather than passes over the whole log until nothing changes (which
    # is quadratic in a chain listed backwards): a rotation is considered once its old key is trusted.
    out_of: dict[str, list[Rotation]] = {}
    for r in judged.rotations:
        out_of.setdefault(r.old.keyid, []).append(r)
    entries = {e.keyid: e for e in store.entries}
    handed: dict[str, ScopeIndex] = {}
    queue: list[tuple[datetime, str, Rotation]] = []
    applied: set[str] = set()

    def enqueue(keyid: str) -> None:
        """(Again) consider the rotations out of `keyid`: it became trusted, or its scopes grew."""
        for r in out_of.get(keyid, []):
            if r.digest not in applied:
                heapq.heappush(queue, (r.effective, r.digest, r))

    for keyid in list(entries):
        enqueue(keyid)
    while queue:
        _, _, r = heapq.heappop(queue)
        old = entries[r.old.keyid]
        if r.digest in applied or any(h.statement == r.digest for h in old.handovers):
            continue
        grant = narrow_scopes(list(r.scopes), old.scopes)
        if not grant:
            continue
        if old.keyid not in handed:
            handed[old.keyid] = ScopeIndex()
            for h in old.handovers:
                for sc in h.scopes:
                    handed[old.keyid].add(sc, h.to)
        index = handed[old.keyid]
        if any(index.overlaps(sc, r.new.keyid) for sc in grant):
            rival = next(h for h in old.handovers if h.to != r.new.keyid and overlaps(h.scopes, grant))
            store.notes[r.new.keyid] = (f"the {r.describe()} is refused: this trust store already follows the handover of "
                                        f"those names to {rival.to[:16]}… (a forked or replayed rotation)")
            continue
        if r.new.keyid in store.revocations:
            store.notes[r.new.keyid] = f"the {r.describe()} leads to a revoked key"
            continue
        new = entries.get(r.new.keyid)
        if new is None:
            new = TrustEntry(r.new.keyid, r.new.pem, [], _successor_label(old), fmt_time(r.issued_at), succeeds=old.keyid)
            store.entries.append(new)
            entries[new.keyid] = new
        new.scopes = sorted(set(new.scopes) | set(grant))
        new.succeeds = new.succeeds or old.keyid
        old.handovers.append(Handover(new.keyid, grant, r.effective, r.digest))
        for sc in grant:
            index.add(sc, new.keyid)
        applied.add(r.digest)
        changed = True
        enqueue(new.keyid)
    return changed


__all__ = ["MAX_LOG_SCOPES", "MAX_STATEMENTS", "Envelope", "Judged", "KeyRef", "Revocation", "Rotation", "ScopeIndex", "Statement", "decode", "dumps_log", "follow",
           "judge", "overlaps", "parse_envelope", "parse_log", "sign_revocation", "sign_rotation", "statement_namespace"]
