"""The trust store: which publisher keys (and organisation CAs) may sign which patch names, and until when.

A TOML file (`$PATCHKIT_HOME/trust.toml`, or `--trust FILE` in CI). Each `[[publisher]]` entry
holds a public key and the fnmatch-style name patterns (scopes) it may sign. A publisher that
rotated its key keeps its entry, with a `[[publisher.handover]]` saying which key took over
which scopes from when; the successor's entry says whom it `succeeds`. Each `[[ca]]` entry is
an organisation CA whose code-signing leaves may sign within its scopes. Each `[[identity]]` entry
is a keyless (Sigstore) signer: an OIDC issuer and an identity (exact, or a pattern), with the
trusted root of the Sigstore instance that certifies it (`patchkit.trust.keyless`). Each `[[root]]` entry
pins a namespace's root of trust (TUF root metadata, `patchkit.trust.root`): for the names it covers,
only the keys that root delegates may sign, whatever any `[[publisher]]` entry or key log says,
and only the root key holders can change those keys.

Revocations are not kept here: they are facts about keys, learned from the registry and kept
in `$PATCHKIT_HOME/state/revocations.json`, where they only ever accumulate (a stale registry
cannot take one back). `authorize` applies both: a revoked key, or a retired key signing after
its handover, is refused unless the signature's time is established and allowed.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from patchkit import constants
from patchkit._internal.clock import fmt_time, now_utc, parse_utc, utc_stamp
from patchkit._internal.files import atomic_write_text, file_lock, lock_for, read_regular
from patchkit._internal.jsonio import Malformed, dumps_canonical, expect_dict, optional, read_guard_state, require
from patchkit.errors import InvalidInputError, NotFoundError, ReadOnlyError, RevokedError, TrustError, UsageError
from patchkit.errors import PatchkitError as PatchkitErrorBase
from patchkit.trust.evidence import Evidence
from patchkit.trust.keys import PublicKey, keyid_of, load_public_key, parse_public_key, public_pem
from patchkit.trust.root.pin import RootPin

if TYPE_CHECKING:
    from patchkit.trust.keyless import KeylessSigner

SCOPE_HINT = "scopes look like acme/* or acme/llama3-tox"
MAX_TRUST_BYTES = 4 * 1024 * 1024
MAX_REVOCATIONS_BYTES = 16 * 1024 * 1024
_GLOB = set("*?[")


@dataclass
class Handover:
    """A rotation this trust store followed: `to` signs `scopes` from `effective` on, in place of this key."""

    to: str
    scopes: list[str]
    effective: datetime
    statement: str  # sha256 of the rotation statement's payload

    def covers(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.scopes)


@dataclass
class TrustEntry:
    keyid: str
    public_key_pem: str
    scopes: list[str]
    label: str = ""
    added_at: str = ""
    succeeds: str = ""  # the keyid this key took over from, when it was added by following a rotation
    handovers: list[Handover] = field(default_factory=list)
    certificate: str = ""  # for a leaf a trusted CA issued: "CN (serial) via CA-label"; not stored

    def covers(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.scopes)

    @property
    def display(self) -> str:
        return self.certificate or self.label or self.keyid[:16]

    def public_key(self) -> PublicKey:
        return parse_public_key(self.public_key_pem.encode(), f"trust entry {self.display}")

    def handover_for(self, name: str) -> Handover | None:
        return next((h for h in self.handovers if h.covers(name)), None)


@dataclass
class CAEntry:
    """An organisation CA: every code-signing leaf it issued may sign within `scopes`."""

    fingerprint: str  # sha256 of the certificate's DER
    certificate_pem: str
    scopes: list[str]
    label: str = ""
    added_at: str = ""

    def covers(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.scopes)

    @property
    def display(self) -> str:
        return self.label or self.fingerprint[:16]


@dataclass
class IdentityEntry:
    """A keyless signer: signatures whose Fulcio leaf names `identity` (exact, or a `*` pattern) from
    `issuer`, certified by the Sigstore instance of `trusted_root`, may sign within `scopes`."""

    issuer: str
    identity: str
    scopes: list[str]
    label: str = ""
    added_at: str = ""
    trusted_root: bytes | None = None  # canonical trusted_root.json; None: the public-good instance
    trusted_root_source: str = ""  # the file it was read from, for `trust list`
    extra: dict[str, Any] = field(default_factory=dict)  # fields this version does not know, written back as read

    @property
    def id(self) -> str:
        """A stable id (what revocations, `trust remove` and messages name): sha256 of issuer and identity."""
        return hashlib.sha256(f"{self.issuer}\n{self.identity}".encode()).hexdigest()

    @property
    def trusted_root_sha256(self) -> str:
        return hashlib.sha256(self.trusted_root).hexdigest() if self.trusted_root is not None else ""

    @property
    def instance(self) -> str:
        from patchkit.trust.keyless import PUBLIC_GOOD

        return PUBLIC_GOOD if self.trusted_root is None else f"trusted root {self.trusted_root_sha256[:16]}"

    def covers(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.scopes)

    @property
    def display(self) -> str:
        return self.label or self.identity


@dataclass(frozen=True)
class Revoked:
    """A verified revocation: `keyid` signs nothing (or nothing dated from `compromised_since` on)."""

    keyid: str
    reason: str
    compromised_since: datetime | None
    statement: str  # sha256 of the revocation statement's payload
    signer: str  # the keyid that signed it: the key itself or its successor
    issued_at: str = ""

    def stricter(self, other: Revoked) -> Revoked:
        """Of two revocations of one key, the one that refuses more (none is ever relaxed)."""
        if self.compromised_since is None:
            return self
        if other.compromised_since is None or other.compromised_since < self.compromised_since:
            return other
        return self

    def refuses(self, signed_by: datetime) -> bool:
        """Every signature, or with `compromised_since`, one that may have been made after it."""
        return self.compromised_since is None or signed_by > self.compromised_since

    def to_dict(self) -> dict[str, Any]:
        return {"reason": self.reason, "statement": self.statement, "signer": self.signer, "issued_at": self.issued_at,
                "compromised_since": fmt_time(self.compromised_since) if self.compromised_since else None}


def validate_scope(pattern: str) -> str:
    if not pattern or pattern.count("/") != 1 or any(c.isspace() for c in pattern) or pattern != pattern.lower():
        raise UsageError(f"invalid scope {pattern!r}", SCOPE_HINT)
    return pattern



def _part_within(inner: str, outer: str) -> bool:
    return inner == outer or outer == "*" or (not (_GLOB & set(inner)) and fnmatch.fnmatchcase(inner, outer))


def scope_within(inner: str, outer: str) -> bool:
    """True only if every name `inner` matches, `outer` matches too (sound, not complete)."""
    if inner == outer:
        return True
    i_ns, _, i_name = inner.partition("/")
    o_ns, _, o_name = outer.partition("/")
    return _part_within(i_ns, o_ns) and _part_within(i_name, o_name)


def scopes_may_overlap(a: str, b: str) -> bool:
    """Conservatively: could some name match both scopes?"""
    def part(x: str, y: str) -> bool:
        both_glob = bool(_GLOB & set(x)) and bool(_GLOB & set(y))
        return x == y or both_glob or fnmatch.fnmatchcase(x, y) or fnmatch.fnmatchcase(y, x)

    a_ns, _, a_name = a.partition("/")
    b_ns, _, b_name = b.partition("/")
    return part(a_ns, b_ns) and part(a_name, b_name)


def narrow_scopes(claimed: list[str], granted: list[str]) -> list[str]:
    """The part of `claimed` that `granted` covers: each claimed scope inside a granted one, and each
    granted scope inside a claimed one. Never wider than `granted`; partial overlaps give nothing."""
    out: set[str] = set()
    for c in claimed:
        for g in granted:
            if scope_within(c, g):
                out.add(c)
            elif scope_within(g, c):
                out.add(g)
    return sorted(out)


def _when(raw: Any, what: str, path: Path) -> datetime:
    t = parse_utc(raw)
    if t is None:
        raise InvalidInputError(f"trust store {path}: {what} {raw!r} is not a UTC time", "re-add the publisher with `patchkit trust add`")
    return t


def _entry(raw: Any, i: int, p: Path) -> TrustEntry:
    try:
        entry = TrustEntry(
            keyid=str(raw["keyid"]),
            public_key_pem=str(raw["public_key"]),
            scopes=[str(s) for s in raw["scopes"]],
            label=str(raw.get("name", "")),
            added_at=str(raw.get("added_at", "")),
            succeeds=str(raw.get("succeeds", "")),
            handovers=[Handover(str(h["to"]), [str(s) for s in h["scopes"]], _when(h.get("from"), "handover time", p),
                                str(h.get("statement", ""))) for h in raw.get("handover", [])],
        )
    except (KeyError, TypeError, AttributeError):
        raise InvalidInputError(f"trust store {p}: publisher #{i + 1} lacks keyid, public_key or scopes", "re-add it with `patchkit trust add`") from None
    if keyid_of(entry.public_key()) != entry.keyid:
        raise InvalidInputError(f"trust store {p}: publisher {entry.display} keyid does not match its key", "re-add it with `patchkit trust add`")
    return entry


def _delegated_entry(key: PublicKey, scopes: list[str], pin: RootPin, root_version: int) -> TrustEntry:
    return TrustEntry(keyid_of(key), public_pem(key).decode(), list(scopes),
                      label=f"{pin.label or pin.namespace} (delegated by root v{root_version})")


def _root(raw: Any, i: int, p: Path) -> RootPin:
    import base64
    import binascii

    try:
        pin = RootPin(namespace=str(raw["namespace"]), scopes=[str(s) for s in raw["scopes"]],
                      root=base64.b64decode(str(raw["root"]), validate=True), label=str(raw.get("name", "")),
                      added_at=str(raw.get("added_at", "")))
    except (KeyError, TypeError, AttributeError, binascii.Error):
        raise InvalidInputError(f"trust store {p}: root #{i + 1} lacks namespace, scopes or root",
                                "re-add it with `patchkit trust add ROOT_JSON --scope NS/*`") from None
    if raw.get("sha256") not in (None, pin.sha256):
        raise InvalidInputError(f"trust store {p}: root #{i + 1} does not match its sha256",
                                "re-add it with `patchkit trust add ROOT_JSON --scope NS/*`")
    return pin


_IDENTITY_FIELDS = {"name", "issuer", "identity", "scopes", "added_at", "trusted_root", "trusted_root_sha256",
                    "trusted_root_source"}
_KNOWN_TABLES = {"version", "publisher", "ca", "root", "identity"}


def _identity(raw: Any, i: int, p: Path) -> IdentityEntry:
    import base64
    import binascii

    from patchkit.trust.keyless import PUBLIC_GOOD

    hint = "re-add it with `patchkit trust add-identity`"
    try:
        encoded = str(raw.get("trusted_root", PUBLIC_GOOD))
        entry = IdentityEntry(issuer=str(raw["issuer"]), identity=str(raw["identity"]), scopes=[str(s) for s in raw["scopes"]],
                              label=str(raw.get("name", "")), added_at=str(raw.get("added_at", "")),
                              trusted_root=None if encoded == PUBLIC_GOOD else base64.b64decode(encoded, validate=True),
                              trusted_root_source=str(raw.get("trusted_root_source", "")),
                              extra={k: v for k, v in raw.items() if k not in _IDENTITY_FIELDS})
    except (KeyError, TypeError, AttributeError, binascii.Error):
        raise InvalidInputError(f"trust store {p}: identity #{i + 1} lacks issuer, identity or scopes", hint) from None
    if raw.get("trusted_root_sha256", "") != entry.trusted_root_sha256:
        raise InvalidInputError(f"trust store {p}: identity #{i + 1}'s trusted root does not match its sha256", hint)
    return entry


def _toml_value(v: Any) -> str:
    """A TOML value for what tomllib read (so unknown entries are written back unchanged)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml_value(x)}" for k, x in v.items()) + "}"
    return json.dumps(str(v), ensure_ascii=False)


def _toml_fields(table: dict[str, Any]) -> list[str]:
    return [f"{json.dumps(str(k))} = {_toml_value(v)}" for k, v in table.items()]


def _ca(raw: Any, i: int, p: Path) -> CAEntry:
    try:
        ca = CAEntry(fingerprint=str(raw["fingerprint"]), certificate_pem=str(raw["certificate"]),
                     scopes=[str(s) for s in raw["scopes"]], label=str(raw.get("name", "")),
                     added_at=str(raw.get("added_at", "")))
    except (KeyError, TypeError, AttributeError):
        raise InvalidInputError(f"trust store {p}: CA #{i + 1} lacks fingerprint, certificate or scopes",
                                "re-add it with `patchkit trust add-ca`") from None
    return ca


# -- revocations: learned from registries, kept in state, never forgotten ------------------------


def revocations_path() -> Path:
    return constants.patchkit_home() / "state" / "revocations.json"


def read_revocations() -> dict[str, Revoked]:
    return read_guard_state(revocations_path(), MAX_REVOCATIONS_BYTES, "restore it; it records key revocations and must not be dropped",
                            missing={}, parse=_revocations)


def _revocations(raw: Any) -> dict[str, Revoked]:
    out: dict[str, Revoked] = {}
    for keyid, r in expect_dict(require(raw, "keys")).items():
        since = optional(r, "compromised_since")
        out[str(keyid)] = Revoked(str(keyid), str(require(r, "reason")), None if since is None else _strict_time(since),
                                  str(require(r, "statement")), str(require(r, "signer")), str(optional(r, "issued_at", "")))
    return out


def _strict_time(raw: Any) -> datetime:
    t = parse_utc(raw)
    if t is None:
        raise Malformed(f"{str(raw)[:40]!r} is not a UTC time")
    return t


def record_revocations(found: list[Revoked]) -> dict[str, Revoked]:
    """Merge `found` into the cache (the stricter of two revocations wins); return the merged set.

    A read-only PATCHKIT_HOME keeps them for this run only.
    """
    path = revocations_path()
    try:
        with file_lock(path.with_name(path.name + ".lock")):
            current = read_revocations()
            merged = dict(current)
            for r in found:
                merged[r.keyid] = merged[r.keyid].stricter(r) if r.keyid in merged else r
            if merged != current:
                atomic_write_text(path, dumps_canonical({"schema": "patchkit-revocations/1",
                                                         "keys": {k: v.to_dict() for k, v in sorted(merged.items())}}),
                                  mode=0o600)
            return merged
    except (ReadOnlyError, OSError):
        merged = read_revocations()
        for r in found:
            merged[r.keyid] = merged[r.keyid].stricter(r) if r.keyid in merged else r
        return merged


@dataclass
class TrustStore:
    path: Path | None = None
    entries: list[TrustEntry] = field(default_factory=list)
    cas: list[CAEntry] = field(default_factory=list)
    revocations: dict[str, Revoked] = field(default_factory=dict)
    roots: list[RootPin] = field(default_factory=list)
    identities: list[IdentityEntry] = field(default_factory=list)
    # Top-level keys and tables this version does not know (a newer patchkit's), written back as read.
    unknown: dict[str, Any] = field(default_factory=dict)
    # What this run learned (signing times, delegations, notes): not configuration, never saved.
    evidence: Evidence = field(default_factory=Evidence)

    @property
    def signing_times(self) -> dict[str, tuple[datetime, str]]:
        return self.evidence.signing_times

    @property
    def notes(self) -> dict[str, str]:
        return self.evidence.notes

    @property
    def delegated(self) -> dict[str, list[TrustEntry]]:
        return self.evidence.delegated

    @property
    def keyless_roots(self) -> dict[str, Any]:
        return self.evidence.keyless_roots

    @classmethod
    def load(cls, path: Path | None = None) -> TrustStore:
        explicit = path is not None
        p = Path(path) if path is not None else constants.default_trust_file()
        revoked = read_revocations()
        if not p.exists():
            if explicit:
                raise NotFoundError(f"trust store {p} does not exist", "create it with `patchkit trust add PUBLIC_PEM --scope NS/* --trust FILE`")
            return cls(p, [], revocations=revoked)
        try:
            data = tomllib.loads(read_regular(p, MAX_TRUST_BYTES, what=f"trust store {p}").decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise InvalidInputError(f"trust store {p} is not valid TOML: {exc}", "fix or recreate it with `patchkit trust add`") from None
        entries = [_entry(raw, i, p) for i, raw in enumerate(data.get("publisher", []))]
        cas = [_ca(raw, i, p) for i, raw in enumerate(data.get("ca", []))]
        roots = [_root(raw, i, p) for i, raw in enumerate(data.get("root", []))]
        identities = [_identity(raw, i, p) for i, raw in enumerate(data.get("identity", []))]
        unknown = {k: v for k, v in data.items() if k not in _KNOWN_TABLES}
        return cls(p, entries, cas, revoked, roots=roots, identities=identities, unknown=unknown)

    @classmethod
    def coerce(cls, trust: TrustStore | Path | str | None) -> TrustStore:
        if isinstance(trust, TrustStore):
            return trust
        return cls.load(Path(trust) if trust is not None else None)

    def find(self, keyid: str) -> TrustEntry | None:
        found = next((e for e in self.entries if e.keyid == keyid), None)
        if found is None and self.roots:
            # A key a verified refresh in this process already delegated is the answer the loop below
            # would give first (its entries come later); skipping it saves a second ngclient refresh,
            # which walks every root version from the pin (issue 21 benchmark: about 0.05 s a command).
            found = next((e for entries in self.delegated.values() for e in entries if e.keyid == keyid), None)
            if found is not None:
                return found
            for pin in self.roots:
                try:
                    self._namespace_keys(pin)
                except PatchkitErrorBase:
                    continue  # no usable cache for that namespace: its names are refused in `authorize`
            found = next((e for entries in self.delegated.values() for e in entries if e.keyid == keyid), None)
        return found

    # -- pinned roots of trust ----------------------------------------------------------------
    def root_for(self, name: str) -> RootPin | None:
        """The pinned root whose scopes cover `name`, if any (then it alone decides who signs `name`)."""
        return next((r for r in self.roots if r.covers(name)), None)

    def delegate(self, name: str, keys: list[PublicKey], pin: RootPin, *, root_version: int) -> None:
        """Record the keys a verified refresh of `pin`'s metadata delegates for `name`."""
        self.delegated[name] = [_delegated_entry(k, [name], pin, root_version) for k in keys]

    def _namespace_keys(self, pin: RootPin) -> list[TrustEntry]:
        """The online keys `pin`'s namespace delegates, from this machine's last verified metadata
        (no registry: verifying a directory). Fails closed when none is cached or it expired."""
        key = f"namespace:{pin.namespace}"
        if key not in self.delegated:
            from patchkit.trust.root.client import cached_online_keys

            keys, version = cached_online_keys(pin)
            self.delegated[key] = [_delegated_entry(k, pin.scopes, pin, version) for k in keys]
        return self.delegated[key]

    def delegated_for(self, name: str, pin: RootPin) -> list[TrustEntry]:
        if name in self.delegated:
            return self.delegated[name]
        return self._namespace_keys(pin)

    def owner_of(self, name: str) -> tuple[str, str] | None:
        """(who, scope): the key or CA this store trusts for `name`, if any (for messages)."""
        for e in self.entries:
            scope = next((s for s in e.scopes if fnmatch.fnmatchcase(name, s)), None)
            if scope is not None:
                return f"key {e.display} ({e.keyid[:16]}…)", scope
        for c in self.cas:
            scope = next((s for s in c.scopes if fnmatch.fnmatchcase(name, s)), None)
            if scope is not None:
                return f"the certificates of CA {c.display}", scope
        for i in self.identities:
            scope = next((s for s in i.scopes if fnmatch.fnmatchcase(name, s)), None)
            if scope is not None:
                return f"keyless identity {i.identity} (issuer {i.issuer})", scope
        return None

    def unknown_signer(self, keyid: str, name: str | None, lead: str) -> TrustError:
        """`lead` ("X was signed by key K…") is not in this store. When another key is trusted for
        `name`, say so: suggesting `trust add` there would talk the user into trusting whoever signed."""
        note = self._note(keyid)
        pin = self.root_for(name) if name else None
        if pin is not None:
            if name not in self.delegated:
                self._namespace_keys(pin)  # raises when this machine cannot tell (never pulled, or expired)
            return TrustError(f"{lead}, which the root of trust of {pin.namespace} does not delegate",
                              "only the keys that namespace's root key holders delegate may sign its patches (a key log "
                              "rotation does not count); ask the publisher which key signs now, and pull again")
        owner = self.owner_of(name) if name else None
        if owner is None:
            return TrustError(f"{lead}, which is not in the trust store ({self.path}){note}",
                              "if you trust this publisher, run `patchkit trust add PUBLIC_PEM --scope NS/*`")
        who, scope = owner
        return TrustError(
            f"{lead}, which is not in the trust store ({self.path}): it is not the key trusted for {name}, which is "
            f"{who} (scope {scope}){note}",
            "do not trust this key unchecked: ask the publisher whether it changed keys (a rotation it publishes is "
            "followed when you pull) and compare with `patchkit trust list`")

    def _note(self, keyid: str) -> str:
        note = self.notes.get(keyid)
        return f"; {note}" if note else ""

    # -- signing times ------------------------------------------------------------------------
    def attest(self, digest: str, published_at: datetime, by: str) -> None:
        """Record what a verified index (signed by `by`) says about when an artifact was published."""
        known = self.signing_times.get(digest)
        if known is None or published_at < known[0]:
            self.signing_times[digest] = (published_at, by)

    def signing_time(self, digest: str | None) -> datetime | None:
        """The artifact's publish time, as an index signed by a key in good standing attests it; None if unknown."""
        if digest is None or digest not in self.signing_times:
            return None
        when, by = self.signing_times[digest]
        return None if by in self.revocations else when

    # -- the decision ---------------------------------------------------------------------------
    def authorize(self, keyid: str, name: str, *, entry: TrustEntry | None = None, digest: str | None = None,
                  signed_at: datetime | None = None, dated_by_signer: bool = False) -> TrustEntry:
        """The entry for `keyid` if it may sign `name` at the signature's time; TrustError otherwise (fail closed).

        The time is `signed_at` (for an index: the time it states, `dated_by_signer`), else what a
        verified index attests for `digest` (an artifact). A time the signer states itself is
        accepted for a retired key's handover but never against a revocation: a compromised key
        can date its signatures as it likes.
        """
        pin = self.root_for(name)
        if pin is not None:
            entry = next((e for e in self.delegated_for(name, pin) if e.keyid == keyid), None)
            if entry is None:
                raise TrustError(
                    f"{name} is signed by key {keyid[:16]}…, which the root of trust of {pin.namespace} "
                    f"(pinned{' as ' + repr(pin.label) if pin.label else ''}) does not delegate",
                    "only the keys that namespace's root key holders delegate may sign its patches (a key log rotation "
                    "does not count); ask the publisher which key signs now, and pull again")
        entry = entry if entry is not None else self.find(keyid)
        if entry is None:
            raise self.unknown_signer(keyid, name, f"{name} is signed by key {keyid[:16]}…")
        if not entry.covers(name):
            raise TrustError(
                f"signer {entry.display} is trusted only for {', '.join(entry.scopes)}, not {name}",
                "the key signed outside its scope; ask the publisher, or widen the scope with `patchkit trust add`",
            )
        when = signed_at if signed_at is not None else self.signing_time(digest)
        # A signature that exists now was made by now: without a trusted date, now is its latest time.
        now = now_utc()
        revoked = self.revocations.get(keyid)
        if revoked is not None and revoked.refuses(now if dated_by_signer or when is None else when):
            since = (f" (compromised since {fmt_time(revoked.compromised_since)}; this signature is "
                     + (f"dated {fmt_time(when)} by the signer itself" if dated_by_signer and when else
                        f"dated {fmt_time(when)}" if when else "undated") + ")") if revoked.compromised_since else ""
            raise RevokedError(
                f"{name} is signed by key {entry.display} ({keyid[:16]}…), which its publisher revoked: "
                f"{json.dumps(revoked.reason)}{since}",
                "do not use it; ask the publisher for a version re-signed with its new key (`patchkit resign`)",
            )
        handover = entry.handover_for(name)
        if handover is not None and (when if when is not None else now) > handover.effective:
            successor = self.find(handover.to)
            shown = successor.display if successor else handover.to[:16]
            dated = (f"signed {fmt_time(when)}" if when else
                     "undated (a directory does not show when it was signed; its registry's signed index does)")
            raise TrustError(
                f"{name} is signed by key {entry.display}, which handed {', '.join(handover.scopes)} over to {shown} "
                f"from {fmt_time(handover.effective)}; this signature is {dated}",
                "verify it by its registry ref (NS/NAME@VERSION), or ask the publisher to re-sign it with the new key",
            )
        return entry

    def certificate_entry(self, chain: list[bytes], *, at: datetime | None) -> TrustEntry:
        """The signer a certificate chain names, if one of the trusted CAs issued it for code signing."""
        from patchkit.trust.certificates import leaf_entry

        leaf = leaf_entry(chain, self.cas, at=at or now_utc(), where=str(self.path))
        return TrustEntry(keyid=leaf.keyid, public_key_pem=leaf.public_key_pem, scopes=leaf.scopes, label=leaf.label,
                          certificate=leaf.certificate)

    def keyless_entry(self, signer: KeylessSigner) -> TrustEntry:
        """The signer a verified keyless signature names: its identity entries' scopes, under the first one's id."""
        first = signer.matched[0]
        trusted_as = ", ".join(m.display for m in signer.matched)
        return TrustEntry(keyid=first.id, public_key_pem=signer.public_key_pem,
                          scopes=sorted({s for m in signer.matched for s in m.scopes}), label=first.label or signer.identity,
                          certificate=f"{signer.identity} (keyless, issuer {signer.issuer}, log index {signer.log_index}; "
                                      f"trusted as {trusted_as})")

    # -- editing ----------------------------------------------------------------------------
    def save(self) -> None:
        assert self.path is not None
        lines = ["# patchkit trust store: publishers and the patch names they may sign", "version = 1"]
        tables = {k: v for k, v in self.unknown.items() if isinstance(v, dict) or (isinstance(v, list) and v and all(
            isinstance(x, dict) for x in v))}
        lines += _toml_fields({k: v for k, v in self.unknown.items() if k not in tables})
        lines.append("")
        for e in self.entries:
            lines += [
                "[[publisher]]",
                f"name = {json.dumps(e.label)}",
                f"keyid = {json.dumps(e.keyid)}",
                f"scopes = [{', '.join(json.dumps(s) for s in e.scopes)}]",
                f"added_at = {json.dumps(e.added_at)}",
            ]
            if e.succeeds:
                lines.append(f"succeeds = {json.dumps(e.succeeds)}")
            lines += [f'public_key = """\n{e.public_key_pem.strip()}\n"""', ""]
            for h in e.handovers:
                lines += [
                    "[[publisher.handover]]",
                    f"to = {json.dumps(h.to)}",
                    f"scopes = [{', '.join(json.dumps(s) for s in h.scopes)}]",
                    f"from = {json.dumps(fmt_time(h.effective))}",
                    f"statement = {json.dumps(h.statement)}",
                    "",
                ]
        for r in self.roots:
            lines += [
                "[[root]]",
                f"name = {json.dumps(r.label)}",
                f"namespace = {json.dumps(r.namespace)}",
                f"scopes = [{', '.join(json.dumps(s) for s in r.scopes)}]",
                f"added_at = {json.dumps(r.added_at)}",
                f"sha256 = {json.dumps(r.sha256)}",
                f"root = {json.dumps(r.encoded())}",
                "",
            ]
        for ca in self.cas:
            lines += [
                "[[ca]]",
                f"name = {json.dumps(ca.label)}",
                f"fingerprint = {json.dumps(ca.fingerprint)}",
                f"scopes = [{', '.join(json.dumps(s) for s in ca.scopes)}]",
                f"added_at = {json.dumps(ca.added_at)}",
                f'certificate = """\n{ca.certificate_pem.strip()}\n"""',
                "",
            ]
        for ident in self.identities:
            import base64

            from patchkit.trust.keyless import PUBLIC_GOOD

            encoded = PUBLIC_GOOD if ident.trusted_root is None else base64.b64encode(ident.trusted_root).decode()
            lines += [
                "[[identity]]",
                f"name = {json.dumps(ident.label)}",
                f"issuer = {json.dumps(ident.issuer)}",
                f"identity = {json.dumps(ident.identity)}",
                f"scopes = [{', '.join(json.dumps(s) for s in ident.scopes)}]",
                f"added_at = {json.dumps(ident.added_at)}",
                f"trusted_root_source = {json.dumps(ident.trusted_root_source)}",
                f"trusted_root_sha256 = {json.dumps(ident.trusted_root_sha256)}",
                f"trusted_root = {json.dumps(encoded)}",
                *_toml_fields(ident.extra),
                "",
            ]
        for key, value in tables.items():
            for table in (value if isinstance(value, list) else [value]):
                lines += [f"[[{json.dumps(key)}]]" if isinstance(value, list) else f"[{json.dumps(key)}]",
                          *_toml_fields(table), ""]
        atomic_write_text(self.path, "\n".join(lines), mode=0o644)


def _lock(path: Path) -> Path:
    return lock_for(path)


def _target(path: Path | None) -> Path:
    return Path(path) if path is not None else constants.default_trust_file()


def _labels(store: TrustStore) -> set[str]:
    return ({e.label for e in store.entries if e.label} | {c.label for c in store.cas if c.label}
            | {i.label for i in store.identities if i.label})


def _chain(store: TrustStore, keyid: str) -> set[str]:
    """`keyid` and every key linked to it by a followed rotation (its predecessors and successors)."""
    linked = {keyid}
    grew = True
    while grew:
        grew = False
        for e in store.entries:
            near = {e.succeeds, *(h.to for h in e.handovers)} - {""}
            if (e.keyid not in linked and near & linked) or (e.keyid in linked and not near <= linked):
                linked |= near | {e.keyid}
                grew = True
    return linked


def shared_scopes(store: TrustStore, scopes: list[str], *, keyid: str = "", fingerprint: str = "",
                  identity: str = "") -> list[str]:
    """One warning per other key or CA trusted for names these scopes also cover (rotation partners excepted)."""
    linked = _chain(store, keyid) if keyid else set()
    out = []
    owners: list[tuple[str, str, list[str]]] = [
        (f"key {e.display} ({e.keyid[:16]}…)", e.label or e.keyid, e.scopes) for e in store.entries if e.keyid not in linked]
    owners += [(f"CA {c.display} ({c.fingerprint[:16]}…)", c.label or c.fingerprint, c.scopes)
               for c in store.cas if c.fingerprint != fingerprint]
    owners += [(f"keyless identity {i.identity} (issuer {i.issuer})", i.label or i.id[:16], i.scopes)
               for i in store.identities if i.id != identity]
    for who, handle, theirs in owners:
        pairs = [(a, b) for a in scopes for b in theirs if scopes_may_overlap(a, b)]
        if pairs:
            mine, other = pairs[0]
            out.append(f"warning: {mine} overlaps {other}, which this trust store already trusts to {who}: signatures by "
                       f"either will be accepted for those names. That is expected while a publisher changes keys; "
                       f"otherwise remove the other with `patchkit trust remove {handle}`")
    return out


def _refuse_revoked(store: TrustStore, kid: str, allow_revoked: bool, warnings: list[str] | None) -> None:
    revoked = store.revocations.get(kid)
    if revoked is None:
        return
    since = f", for signatures from {fmt_time(revoked.compromised_since)} on" if revoked.compromised_since else ""
    what = (f"key {kid[:16]}… was revoked by its publisher{since}: {json.dumps(revoked.reason)} "
            f"(revocation {revoked.statement[:12]}, signed by {revoked.signer[:16]}…)")
    if not allow_revoked:
        raise TrustError(what, "do not trust it: ask the publisher for its current key (a rotation it publishes is followed "
                               "when you pull); --allow-revoked adds it anyway, and the revocation still applies")
    if warnings is not None:
        warnings.append(f"warning: {what}; added because of --allow-revoked, and its signatures are still refused as "
                        "the revocation says")


def trust_add(public_pem_path: Path, scopes: list[str], label: str | None = None, path: Path | None = None, *,
              allow_revoked: bool = False, warnings: list[str] | None = None) -> TrustEntry:
    """Trust a key for `scopes`. A key a known revocation names is refused (TrustError) unless
    `allow_revoked`; names another key or CA is already trusted for add a warning to `warnings`."""
    if not scopes:
        raise UsageError("trust add needs at least one --scope", SCOPE_HINT)
    scopes = [validate_scope(s) for s in scopes]
    key = load_public_key(public_pem_path)
    target = _target(path)
    with file_lock(_lock(target)):
        store = TrustStore.load(target) if target.exists() else TrustStore(target, [], revocations=read_revocations())
        kid = keyid_of(key)
        _refuse_revoked(store, kid, allow_revoked, warnings)
        if warnings is not None:
            warnings.extend(shared_scopes(store, scopes, keyid=kid))
        existing = store.find(kid)
        if existing:
            existing.scopes = sorted(set(existing.scopes) | set(scopes))
            if label:
                existing.label = label
            entry = existing
        else:
            if label and label in _labels(store):
                raise UsageError(f"a publisher named {label!r} is already trusted", "pick another --name")
            entry = TrustEntry(kid, public_pem(key).decode(), sorted(set(scopes)), label or "", utc_stamp())
            store.entries.append(entry)
        store.save()
    return entry


def is_root_file(path: Path) -> bool:
    """Whether `trust add` was handed TUF root metadata (JSON) rather than a PEM key."""
    p = Path(path)
    if not p.is_file():
        return False
    with p.open("rb") as f:
        return f.read(64).lstrip().startswith(b"{")


def trust_add_root(root_path: Path, scopes: list[str], label: str | None = None, path: Path | None = None, *,
                   warnings: list[str] | None = None) -> RootPin:
    """Pin a namespace's root of trust for `scopes` (all in that namespace). Re-adding replaces the pin."""
    from patchkit.trust.root.metadata import MAX_ROOT_BYTES, namespace_of, parse_root

    if not scopes:
        raise UsageError("trust add needs at least one --scope", SCOPE_HINT)
    scopes = [validate_scope(s) for s in scopes]
    data = read_regular(Path(root_path), MAX_ROOT_BYTES, what=str(root_path))
    where = str(root_path)
    namespace = namespace_of(parse_root(data, where), where)
    wrong = [s for s in scopes if s.partition("/")[0] != namespace]
    if wrong:
        raise UsageError(f"{where} is the root of trust of namespace {namespace}; {', '.join(wrong)} is outside it",
                         f"use scopes inside it, e.g. --scope {namespace}/*")
    target = _target(path)
    with file_lock(_lock(target)):
        store = TrustStore.load(target) if target.exists() else TrustStore(target, [], revocations=read_revocations())
        pin = RootPin(namespace, sorted(set(scopes)), data, label or f"{namespace} root", utc_stamp())
        replaced = [r for r in store.roots if r.namespace == namespace]
        store.roots = [r for r in store.roots if r.namespace != namespace] + [pin]
        if warnings is not None:
            if replaced:
                warnings.append(f"note: replaced the root pinned for {namespace} earlier (added {replaced[0].added_at})")
            covered = [e.display for e in store.entries if any(scopes_may_overlap(a, b) for a in e.scopes for b in scopes)]
            if covered:
                warnings.append(f"note: for {', '.join(scopes)} the root now decides which keys sign; the publisher key(s) "
                                f"{', '.join(covered)} trusted there count only if the root delegates them")
        store.save()
    return pin


def trust_add_ca(certificate_path: Path, scopes: list[str], label: str | None = None, path: Path | None = None, *,
                 warnings: list[str] | None = None) -> CAEntry:
    """Trust an organisation CA (a self-signed root, or an intermediate) for the given name patterns."""
    from patchkit.trust.certificates import load_ca_certificate

    if not scopes:
        raise UsageError("trust add-ca needs at least one --scope", SCOPE_HINT)
    scopes = [validate_scope(s) for s in scopes]
    pem, der, subject = load_ca_certificate(certificate_path)
    fingerprint = hashlib.sha256(der).hexdigest()
    target = _target(path)
    with file_lock(_lock(target)):
        store = TrustStore.load(target) if target.exists() else TrustStore(target, [])
        if warnings is not None:
            warnings.extend(shared_scopes(store, scopes, fingerprint=fingerprint))
        existing = next((c for c in store.cas if c.fingerprint == fingerprint), None)
        if existing is not None:
            existing.scopes = sorted(set(existing.scopes) | set(scopes))
            if label:
                existing.label = label
            ca = existing
        else:
            name = label or subject
            if name in _labels(store):
                raise UsageError(f"a publisher or CA named {name!r} is already trusted", "pick another --name")
            ca = CAEntry(fingerprint, pem, sorted(set(scopes)), name, utc_stamp())
            store.cas.append(ca)
        store.save()
    return ca


def trust_add_identity(issuer: str, identity: str, scopes: list[str], label: str | None = None, path: Path | None = None, *,
                       trusted_root: Path | None = None, warnings: list[str] | None = None) -> IdentityEntry:
    """Trust a keyless signer (an OIDC issuer and an identity or identity pattern) for `scopes`.

    `trusted_root` is the Sigstore instance's trusted_root.json (a private instance); without it,
    the public-good instance. Re-adding the same issuer and identity widens its scopes and
    replaces its trusted root.
    """
    from patchkit.trust.keyless import (
        MAX_TRUSTED_ROOT_BYTES,
        normalize_trusted_root,
        validate_identity,
        validate_issuer,
    )

    if not scopes:
        raise UsageError("trust add-identity needs at least one --scope", SCOPE_HINT)
    scopes = [validate_scope(s) for s in scopes]
    issuer, identity = validate_issuer(issuer), validate_identity(identity)
    root: bytes | None = None
    if trusted_root is not None:
        try:
            raw = read_regular(Path(trusted_root), MAX_TRUSTED_ROOT_BYTES, what=f"trusted root {trusted_root}")
        except FileNotFoundError:
            raise NotFoundError(f"trusted root {trusted_root} does not exist", "check the path") from None
        root = normalize_trusted_root(raw, str(trusted_root))
    target = _target(path)
    with file_lock(_lock(target)):
        store = TrustStore.load(target) if target.exists() else TrustStore(target, [], revocations=read_revocations())
        entry = IdentityEntry(issuer, identity, sorted(set(scopes)), label or "", utc_stamp(), root,
                              str(trusted_root) if trusted_root is not None else "")
        if warnings is not None:
            warnings.extend(shared_scopes(store, scopes, identity=entry.id))
        existing = next((i for i in store.identities if i.id == entry.id), None)
        if existing is not None:
            existing.scopes = sorted(set(existing.scopes) | set(scopes))
            existing.label = label or existing.label
            existing.trusted_root, existing.trusted_root_source = entry.trusted_root, entry.trusted_root_source
            entry = existing
        else:
            if label and label in _labels(store):
                raise UsageError(f"a publisher, CA or identity named {label!r} is already trusted", "pick another --name")
            store.identities.append(entry)
        store.save()
    return entry


def trust_remove(key: str, path: Path | None = None) -> TrustEntry | CAEntry | RootPin | IdentityEntry:
    target = _target(path)
    with file_lock(_lock(target)):
        store = TrustStore.load(target)
        matches: list[TrustEntry | CAEntry | IdentityEntry] = [
            e for e in store.entries if e.label == key or e.keyid == key or (len(key) >= 8 and e.keyid.startswith(key))]
        matches += [c for c in store.cas
                    if c.label == key or c.fingerprint == key or (len(key) >= 8 and c.fingerprint.startswith(key))]
        matches += [i for i in store.identities
                    if key in (i.label, i.identity, i.id) or (len(key) >= 8 and i.id.startswith(key))]
        pins = [r for r in store.roots if key in (r.label, r.namespace, r.sha256) or (len(key) >= 8 and r.sha256.startswith(key))]
        if pins and not matches:
            if len(pins) > 1:
                raise UsageError(f"{key!r} matches {len(pins)} pinned roots", "give the namespace")
            store.roots.remove(pins[0])
            store.save()
            return pins[0]
        if not matches:
            raise NotFoundError(f"no trusted publisher, CA, identity or root matches {key!r}", "see `patchkit trust list`")
        if len(matches) > 1:
            raise UsageError(f"{key!r} matches {len(matches)} trust entries", "give the full keyid or fingerprint")
        found = matches[0]
        if isinstance(found, TrustEntry):
            store.entries.remove(found)
        elif isinstance(found, IdentityEntry):
            store.identities.remove(found)
        else:
            store.cas.remove(found)
        store.save()
    return found


__all__ = [
    "CAEntry",
    "Handover",
    "IdentityEntry",
    "Revoked",
    "RootPin",
    "TrustEntry",
    "TrustStore",
    "is_root_file",
    "narrow_scopes",
    "read_revocations",
    "record_revocations",
    "scope_within",
    "scopes_may_overlap",
    "shared_scopes",
    "trust_add",
    "trust_add_ca",
    "trust_add_identity",
    "trust_add_root",
    "trust_remove",
    "validate_scope",
]
