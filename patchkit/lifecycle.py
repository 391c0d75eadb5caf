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
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from patchkit._internal.clock import fmt_time, parse_utc
from patchkit._internal.jsonio import dumps_canonical, loads_strict
from patchkit.errors import IntegrityError, InvalidInputError, UsageError
from patchkit.keys import PrivateKey, PublicKey, keyid_of, parse_public_key, public_pem
from patchkit.manifest import NAME_PART
from patchkit.signing import pae
from patchkit.trust import Handover, Revoked, TrustEntry, TrustStore, narrow_scopes, validate_scope

PAYLOAD_TYPE = "application/vnd.patchkit.key-statement+json"
STATEMENT_SCHEMA = "patchkit-key-statement/1"
LOG_SCHEMA = "patchkit-keys/1"
MAX_STATEMENT_BYTES = 64 * 1024
MAX_STATEMENTS = 1024
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
    if not isinstance(value, str):
        raise TypeError(what)
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        raise IntegrityError(f"{where}: {what} is not valid base64", "the key log is corrupt") from None


def parse_envelope(raw: Any, where: str) -> Envelope:
    try:
        if raw["payloadType"] != PAYLOAD_TYPE:
            raise IntegrityError(f"{where}: not a patchkit key statement", "the key log is corrupt")
        payload = _b64(raw["payload"], "payload", where)
        sigs = raw["signatures"]
        if not isinstance(sigs, list) or not 1 <= len(sigs) <= 4:
            raise TypeError
        out = tuple((str(s["keyid"]), _b64(s["sig"], "signature", where)) for s in sigs)
    except (KeyError, TypeError, AttributeError):
        raise IntegrityError(f"{where}: malformed key statement", "the key log is corrupt") from None
    if len(payload) > MAX_STATEMENT_BYTES:
        raise IntegrityError(f"{where}: a key statement is larger than one can be", "the key log is corrupt")
    return Envelope(payload, out)


def _keyref(raw: Any, where: str) -> KeyRef:
    pem = str(raw["public_key"])
    key = parse_public_key(pem.encode(), where)
    ref = KeyRef.of(key)
    if ref.keyid != raw["keyid"]:
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
        body = loads_strict(env.payload, what=where)
        if body["schema"] != STATEMENT_SCHEMA:
            raise IntegrityError(f"{where}: unknown key statement schema {str(body['schema'])[:40]!r}", "upgrade patchkit")
        ns = str(body["namespace"])
        if not _NAMESPACE_RE.match(ns):
            raise TypeError
        if body["type"] == "rotation":
            scopes = body["scopes"]
            if not isinstance(scopes, list) or not scopes or len(scopes) > 64:
                raise TypeError
            return Rotation(env.digest, ns, _keyref(body["old"], where), _keyref(body["new"], where),
                            tuple(str(s) for s in scopes), _time(body["effective"], "effective", where),
                            _time(body["issued_at"], "issued_at", where))
        if body["type"] == "revocation":
            reason = body["reason"]
            since = body.get("compromised_since")
            if not isinstance(reason, str) or not reason or len(reason) > MAX_REASON_CHARS:
                raise TypeError
            return Revocation(env.digest, ns, _keyref(body["key"], where), _keyref(body["signer"], where), reason,
                              None if since is None else _time(since, "compromised_since", where),
                              _time(body["issued_at"], "issued_at", where))
        raise IntegrityError(f"{where}: unknown key statement type {str(body['type'])[:40]!r}", "upgrade patchkit")
    except (KeyError, TypeError, AttributeError, InvalidInputError):
        raise IntegrityError(f"{where}: malformed key statement", "the key log is corrupt") from None


def parse_log(data: bytes, *, namespace: str, where: str) -> list[Envelope]:
    """The envelopes of one namespace's key log file (`patchkit-keys.json`), bounded."""
    try:
        raw = loads_strict(data, what=where)
        if raw["schema"] != LOG_SCHEMA:
            raise IntegrityError(f"{where}: unknown key log schema", "upgrade patchkit")
        if raw["namespace"] != namespace:
            raise IntegrityError(f"{where}: the key log is for namespace {str(raw['namespace'])[:40]!r}, not {namespace!r}",
                                 "the registry served another namespace's key log")
        items = raw["statements"]
        if not isinstance(items, list):
            raise TypeError
    except (KeyError, TypeError, InvalidInputError):
        raise IntegrityError(f"{where}: malformed key log", "the key log is corrupt") from None
    if len(items) > MAX_STATEMENTS:
        raise IntegrityError(f"{where}: more than {MAX_STATEMENTS} key statements", "the key log is corrupt")
    return [parse_envelope(x, f"{where} statement #{i + 1}") for i, x in enumerate(items)]


def dumps_log(namespace: str, envelopes: list[Envelope]) -> bytes:
    return dumps_canonical({"schema": LOG_SCHEMA, "namespace": namespace,
                            "statements": [e.to_dict() for e in envelopes]}).encode("utf-8")


# -- judging a log ----------------------------------------------------------------------------


def _may_overlap(a: str, b: str) -> bool:
    """Conservatively: could some name match both scopes?"""
    def part(x: str, y: str) -> bool:
        both_glob = bool(_GLOB & set(x)) and bool(_GLOB & set(y))
        return x == y or both_glob or fnmatch.fnmatchcase(x, y) or fnmatch.fnmatchcase(y, x)

    a_ns, _, a_name = a.partition("/")
    b_ns, _, b_name = b.partition("/")
    return part(a_ns, b_ns) and part(a_name, b_name)


def overlaps(a: Iterable[str], b: Iterable[str]) -> bool:
    bs = list(b)
    return any(_may_overlap(x, y) for x in a for y in bs)


@dataclass
class Judged:
    """What a namespace's key log establishes: the rotations and revocations that stand, and why others fell."""

    rotations: list[Rotation] = field(default_factory=list)
    revocations: list[Revocation] = field(default_factory=list)
    refused: dict[str, tuple[Statement, str]] = field(default_factory=dict)  # digest -> (statement, reason)
    verified: set[str] = field(default_factory=set)  # digests whose signatures checked out

    @property
    def standing(self) -> list[str]:
        """The digests of the statements that stand."""
        return [r.digest for r in self.rotations] + [r.digest for r in self.revocations]

    def successors(self, keyid: str) -> set[str]:
        """Every key reachable from `keyid` through standing rotations."""
        seen: set[str] = set()
        todo = [keyid]
        while todo:
            k = todo.pop()
            for r in self.rotations:
                if r.old.keyid == k and r.new.keyid not in seen:
                    seen.add(r.new.keyid)
                    todo.append(r.new.keyid)
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


def judge(envelopes: list[Envelope], *, namespace: str, where: str, verified: set[str] | frozenset[str] = frozenset()) -> Judged:
    """Decide which statements of one namespace's log stand.

    `verified` holds digests whose signatures were checked before (the client's memory), so a
    log seen before costs no signature checks. The rules, in order: a statement must be for this
    namespace and properly signed; two rotations out of one key with overlapping scopes are a
    fork and both fall; a revocation must be signed by the key or a successor of it; and a
    rotation out of a revoked key stands only on the way to the key that revoked it.
    """
    out = Judged()
    seen: set[str] = set()
    candidates: list[tuple[Statement, Envelope]] = []
    for i, env in enumerate(envelopes):
        if env.digest in seen:
            continue
        seen.add(env.digest)
        st = decode(env, f"{where} statement #{i + 1}")
        if st.namespace != namespace:
            out.refused[env.digest] = (st, f"it was issued for the key log of namespace {st.namespace}, not {namespace} "
                                           "(a replayed statement)")
            continue
        candidates.append((st, env))
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
    for r in rotations:
        rivals = [o for o in rotations if o is not r and o.old.keyid == r.old.keyid and o.new.keyid != r.new.keyid
                  and overlaps(o.scopes, r.scopes)]
        if rivals:
            out.refused[r.digest] = (r, f"key {r.old.keyid[:16]}… also hands the same names to "
                                        f"{rivals[0].new.keyid[:16]}… (a forked or replayed rotation)")
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
    progress = True
    while progress:
        progress = False
        for r in sorted(judged.rotations, key=lambda x: (x.effective, x.digest)):
            old = store.find(r.old.keyid)
            if old is None or any(h.statement == r.digest for h in old.handovers):
                continue
            grant = narrow_scopes(list(r.scopes), old.scopes)
            if not grant:
                continue
            rival = next((h for h in old.handovers if h.to != r.new.keyid and overlaps(h.scopes, grant)), None)
            if rival is not None:
                store.notes[r.new.keyid] = (f"the {r.describe()} is refused: this trust store already follows the handover of "
                                            f"those names to {rival.to[:16]}… (a forked or replayed rotation)")
                continue
            if r.new.keyid in store.revocations:
                store.notes[r.new.keyid] = f"the {r.describe()} leads to a revoked key"
                continue
            new = store.find(r.new.keyid)
            if new is None:
                new = TrustEntry(r.new.keyid, r.new.pem, [], _successor_label(old), fmt_time(r.issued_at), succeeds=old.keyid)
                store.entries.append(new)
            new.scopes = sorted(set(new.scopes) | set(grant))
            new.succeeds = new.succeeds or old.keyid
            old.handovers.append(Handover(new.keyid, grant, r.effective, r.digest))
            changed = progress = True
    return changed


__all__ = ["Envelope", "Judged", "KeyRef", "Revocation", "Rotation", "Statement", "decode", "dumps_log", "follow",
           "judge", "overlaps", "parse_envelope", "parse_log", "sign_revocation", "sign_rotation", "statement_namespace"]
