"""Sigstore bundle v0.3 verification (Fulcio leaf, Rekor v1 `dsse/0.0.1` entry) with `cryptography` only.

Why not sigstore-python: importing it costs most of a second, more than the whole of a key
bundle's `verify`, and the issue's goal is half of `model_signing verify sigstore`'s time. The
checks below are sigstore-python 4.5's `Verifier.verify_dsse`, step for step and in its order
(sigstore/verify/verifier.py, sigstore/models.py, sigstore/_internal/{sct,merkle,trust}.py,
sigstore/_internal/rekor/checkpoint.py), so a bundle is accepted here exactly when sigstore
accepts it:

-. the bundle read as sigstore-models reads it (strict types, no unknown field), with sigstore's
   v0.3 invariants (one log entry, an inclusion proof with a checkpoint, an inclusion promise);
0. time: the log's integrated time, bound by the signed entry timestamp (SET);
1. the leaf chains to a trusted Fulcio CA (every CA certificate of the trusted root whose
   `validFor` has started is an anchor, as in sigstore) and was valid at that time, by
   `cryptography`'s own X.509 path validation with sigstore's extension policies;
2. exactly one embedded SCT, a precertificate SCT signed by a CT log key of the trusted root over
   the RFC 6962 `digitally-signed` structure;
3. key usage `digitalSignature` and extended key usage `codeSigning`;
4. the RFC 6962 inclusion proof to the root hash, and the signed checkpoint (a signed note) over
   that root hash by the log key the entry names;
5. the SET by a trusted log key over the entry's canonical JSON;
6. the integrated time within the leaf's validity;
7. the DSSE signature with the leaf key;
8. the entry body (`dsse/0.0.1`): the payload hash and the signature list match the bundle.

What this does not cover (RFC 3161 signed timestamps, Rekor v2 entries, other entry kinds) is
reported as `Unsupported`; the caller hands those bundles to sigstore-python itself.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes


class Unsupported(Exception):
    """A well-formed bundle this module does not verify (sigstore-python does)."""


class ChainRefused(Exception):
    """The leaf does not chain to the trusted CA, was not valid at the log's time, or its SCT is bad."""


class Invalid(Exception):
    """A malformed bundle, or a log entry, proof or signature that does not verify."""


# -- trusted roots --------------------------------------------------------------------------------

_EC_HASH = {"PKIX_ECDSA_P256_SHA_256": "SHA256", "PKIX_ECDSA_P384_SHA_384": "SHA384",
            "PKIX_ECDSA_P521_SHA_512": "SHA512"}
_RSA_SHA256 = {"PKCS1_RSA_PKCS1V5", "PKIX_RSA_PKCS1V15_2048_SHA256", "PKIX_RSA_PKCS1V15_3072_SHA256",
               "PKIX_RSA_PKCS1V15_4096_SHA256"}


def _time(text: Any) -> datetime:
    if not isinstance(text, str):
        raise ValueError("a time is not a string")
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def _started(valid_for: Any, now: datetime) -> bool:
    """sigstore's `is_timerange_valid(..., allow_expired=True)`: no period, or one that has started."""
    if not valid_for:
        return True
    return now >= _time(valid_for["start"])


@dataclass(frozen=True)
class _Key:
    key: PublicKeyTypes
    details: str

    def verify(self, signature: bytes, data: bytes) -> None:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

        if isinstance(self.key, rsa.RSAPublicKey):
            self.key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(self.key, ec.EllipticCurvePublicKey):
            self.key.verify(signature, data, ec.ECDSA(getattr(hashes, _EC_HASH[self.details])()))
        elif isinstance(self.key, ed25519.Ed25519PublicKey):
            self.key.verify(signature, data)
        else:  # pragma: no cover - _keyring admits only the three kinds above
            raise Invalid(f"keyring: unsupported key: {self.key}")


def _key_id(key: PublicKeyTypes) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return hashlib.sha256(key.public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)).digest()


def _keyring(logs: Any, now: datetime) -> dict[bytes, _Key]:
    """Trusted log keys by RFC 6962 key id (sha256 of the SPKI, computed, never read from `logId`);
    keys whose `validFor` has not started, and kinds sigstore does not know, are left out."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from cryptography.hazmat.primitives.serialization import load_der_public_key

    ring: dict[bytes, _Key] = {}
    for log in logs:
        public = log["publicKey"]
        if not _started(public.get("validFor"), now):
            continue
        details = public.get("keyDetails", "")
        kind: tuple[type, ...] = (rsa.RSAPublicKey,) if details in _RSA_SHA256 else \
            (ec.EllipticCurvePublicKey,) if details in _EC_HASH else \
            (ed25519.Ed25519PublicKey,) if details == "PKIX_ED25519" else ()
        raw = base64.b64decode(public.get("rawBytes") or "")
        if not kind or not raw:
            continue
        try:
            key = load_der_public_key(raw)
        except ValueError:
            continue
        if isinstance(key, kind):
            ring[_key_id(key)] = _Key(key, details)
    return ring


@dataclass(frozen=True)
class Root:
    """A parsed trusted root: Fulcio CA certificates (the path-validation anchors), CT log keys and
    transparency log keys, as sigstore's `TrustedRoot` offers them for verification."""

    fulcio: list[x509.Certificate]
    ct_keys: dict[bytes, _Key]
    tlog_keys: dict[bytes, _Key]


def parse_root(data: bytes) -> Root:
    """Parse trusted_root.json (ValueError when it is not one sigstore could verify with)."""
    from cryptography import x509

    now = datetime.now(UTC)
    try:
        doc = json.loads(data)
        fulcio = [x509.load_der_x509_certificate(base64.b64decode(c["rawBytes"]))
                  for ca in doc.get("certificateAuthorities", []) if _started(ca.get("validFor"), now)
                  for c in ca["certChain"]["certificates"]]
        ct_keys, tlog_keys = _keyring(doc.get("ctlogs", []), now), _keyring(doc.get("tlogs", []), now)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"malformed trusted root: {exc!r}") from None
    if not doc.get("tlogs"):
        raise ValueError("trusted root contains no transparency log instances")
    if not fulcio:
        raise ValueError("Fulcio certificates not found in trusted root")
    return Root(fulcio, ct_keys, tlog_keys)


def _verify_with(ring: dict[bytes, _Key], key_id: bytes, signature: bytes, data: bytes, what: str) -> None:
    """sigstore's `Keyring.verify`: the key the (unauthenticated) id names, else every key."""
    from cryptography.exceptions import InvalidSignature

    if not ring:
        raise Invalid(f"Did not find any {what} keys in trusted root")
    named = ring.get(key_id)
    for candidate in [named] if named is not None else list(ring.values()):
        try:
            candidate.verify(signature, data)
            return
        except InvalidSignature:
            pass
    raise Invalid("keyring: invalid signature")


# -- the bundle -----------------------------------------------------------------------------------
#
# sigstore-python reads a bundle with sigstore-models' pydantic models: strict types, no unknown
# field, each field under its camelCase or snake_case name, protobuf uint64 as a JSON string,
# protobuf bytes as base64 decoded without validation. `_shape` applies the same rules to the
# parts of the models a keyless DSSE bundle uses, so a bundle they refuse is refused here too.

_U64, _BYTES, _STR, _ANY = "u64", "bytes", "str", "any"
_Schema = dict[str, tuple[Any, bool]]  # field (camelCase) -> (kind, required)
_CHECKPOINT: _Schema = {"envelope": (_STR, True)}
_PROOF: _Schema = {"logIndex": (_U64, True), "rootHash": (_BYTES, True), "treeSize": (_U64, True),
                   "hashes": ([_BYTES], True), "checkpoint": (_CHECKPOINT, False)}
_ENTRY: _Schema = {"logIndex": (_U64, True), "logId": ({"keyId": (_BYTES, True)}, True),
                   "kindVersion": ({"kind": (_STR, True), "version": (_STR, True)}, True),
                   "integratedTime": (_U64, False), "inclusionPromise": ({"signedEntryTimestamp": (_BYTES, True)}, False),
                   "inclusionProof": (_PROOF, True), "canonicalizedBody": (_BYTES, True)}
_MATERIAL: _Schema = {"publicKey": (_ANY, False), "x509CertificateChain": (_ANY, False),
                      "certificate": ({"rawBytes": (_BYTES, True)}, False), "tlogEntries": ([_ENTRY], True),
                      "timestampVerificationData": ({"rfc3161Timestamps": ([{"signedTimestamp": (_BYTES, True)}], False)},
                                                    False)}
_ENVELOPE: _Schema = {"payload": (_BYTES, True), "payloadType": (_STR, True),
                      "signatures": ([{"sig": (_BYTES, True), "keyid": (_STR, False)}], True)}
_BUNDLE: _Schema = {"mediaType": (_STR, True), "verificationMaterial": (_MATERIAL, True),
                    "messageSignature": (_ANY, False), "dsseEnvelope": (_ENVELOPE, False)}


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z0-9])", "_", name).lower()


def _shape(value: Any, kind: Any, where: str) -> Any:
    """`value` read as sigstore-models reads it (camelCase keys, ints, bytes), or Invalid."""
    if kind == _ANY:
        return value
    if kind == _STR:
        if not isinstance(value, str):
            raise Invalid(f"{where}: expected a string")
        return value
    if kind == _U64:
        if not isinstance(value, str):
            raise Invalid(f"{where}: Expected protobuf uint64 as string, got {type(value).__name__}")
        try:
            n = int(value)
        except ValueError:
            raise Invalid(f"{where}: not an integer") from None
        if not 0 <= n < 1 << 64:
            raise Invalid(f"{where}: Value exceeds uint64 domain: {value}")
        return n
    if kind == _BYTES:
        if not isinstance(value, str):
            raise Invalid(f"{where}: Expected protobuf bytes as string")
        try:
            return base64.b64decode(value)
        except ValueError:
            raise Invalid(f"{where}: not base64") from None
    if isinstance(kind, list):
        if not isinstance(value, list):
            raise Invalid(f"{where}: expected a list")
        return [_shape(item, kind[0], f"{where}.{i}") for i, item in enumerate(value)]
    if not isinstance(value, dict):
        raise Invalid(f"{where}: expected an object")
    names = {name: name for name in kind} | {_snake(name): name for name in kind}
    out: dict[str, Any] = {}
    for key, item in value.items():
        field = names.get(key)
        if field is None or field in out:
            raise Invalid(f"{where}.{key}: Extra inputs are not permitted")
        required = kind[field][1]
        out[field] = None if item is None and not required else _shape(item, kind[field][0], f"{where}.{key}")
    for field, (_kind, required) in kind.items():
        if required and field not in out:
            raise Invalid(f"{where}.{field}: Field required")
    return out


@dataclass(frozen=True)
class Entry:
    """A Rekor v1 transparency log entry as the bundle holds it."""

    log_index: int
    log_id: bytes
    integrated_time: int
    set_signature: bytes | None
    proof_index: int
    proof_size: int
    root_hash: bytes
    hashes: list[bytes]
    checkpoint: str
    body: bytes


@dataclass(frozen=True)
class Parsed:
    """What the native verification reads from a bundle."""

    entry: Entry
    payload: bytes
    payload_type: str
    signatures: list[bytes]


def read_bundle(bundle: Any) -> Parsed:
    """The bundle in sigstore-models' shape, with sigstore's `Bundle` invariants for v0.3: one log
    entry, an inclusion proof with a checkpoint, and an inclusion promise. Unsupported for what the
    native path leaves to sigstore: signed timestamps, entry kinds other than dsse/0.0.1."""
    doc = _shape(bundle, _BUNDLE, "Bundle")
    material = doc["verificationMaterial"]
    proofs = [e["inclusionProof"] for e in material["tlogEntries"]]
    if any(p["treeSize"] <= p["logIndex"] for p in proofs):
        raise Invalid("an inclusion proof's logIndex must be less than its treeSize")
    if sum(material.get(k) is not None for k in ("publicKey", "x509CertificateChain", "certificate")) != 1:
        raise Invalid("Exactly one of publicKey, x509CertificateChain, or certificate must be set")
    if (doc.get("messageSignature") is None) == (doc.get("dsseEnvelope") is None):
        raise Invalid("Exactly one of messageSignature or dsseEnvelope must be set")
    if doc.get("dsseEnvelope") is None or material.get("certificate") is None:
        raise Unsupported("not a keyless DSSE bundle")
    if (material.get("timestampVerificationData") or {}).get("rfc3161Timestamps"):  # none listed: as absent there
        raise Unsupported("RFC 3161 signed timestamps")
    if len(material["tlogEntries"]) != 1:
        raise Invalid("expected exactly one log entry in bundle")
    raw = material["tlogEntries"][0]
    kind, version = raw["kindVersion"]["kind"], raw["kindVersion"]["version"]
    if version not in ("0.0.1", "0.0.2"):
        raise Invalid(f"Expected log entry version 0.0.1 - 0.0.2, got {version}")
    proof = raw["inclusionProof"]
    if not proof.get("checkpoint"):
        raise Invalid("entry must contain inclusion proof, with checkpoint")
    if (kind, version) != ("dsse", "0.0.1"):
        raise Unsupported(f"log entry kind {kind}/{version}")
    promise = raw.get("inclusionPromise")
    if promise is None:
        raise Invalid("bundle must contain an inclusion promise or signed timestamp(s)")
    envelope = doc["dsseEnvelope"]
    entry = Entry(log_index=raw["logIndex"], log_id=raw["logId"]["keyId"], integrated_time=raw.get("integratedTime") or 0,
                  set_signature=promise["signedEntryTimestamp"], proof_index=proof["logIndex"],
                  proof_size=proof["treeSize"], root_hash=proof["rootHash"], hashes=proof["hashes"],
                  checkpoint=proof["checkpoint"]["envelope"], body=raw["canonicalizedBody"])
    return Parsed(entry, envelope["payload"], envelope["payloadType"], [s["sig"] for s in envelope["signatures"]])


# -- the steps --------------------------------------------------------------------------------------


def _verify_chain(cert: x509.Certificate, root: Root, at: datetime) -> list[x509.Certificate]:
    """Step 1, with sigstore's policy: webpki defaults, plus code signing (a non-critical EKU) allowed."""
    from cryptography import x509
    from cryptography.x509.verification import (
        Criticality,
        ExtensionPolicy,
        PolicyBuilder,
        Store,
        VerificationError,
    )

    ca_policy = ExtensionPolicy.webpki_defaults_ca().may_be_present(x509.ExtendedKeyUsage, Criticality.NON_CRITICAL, None)
    ee_policy = ExtensionPolicy.webpki_defaults_ee().may_be_present(x509.ExtendedKeyUsage, Criticality.NON_CRITICAL, None)
    verifier = (PolicyBuilder().store(Store(root.fulcio)).time(at)
                .extension_policies(ca_policy=ca_policy, ee_policy=ee_policy).build_client_verifier())
    try:
        return list(verifier.verify(cert, []).chain[1:])
    except (VerificationError, x509.UnsupportedGeneralNameType) as exc:
        raise ChainRefused(f"failed to build timestamp certificate chain: {exc}") from None


def _is_ca(cert: x509.Certificate) -> bool:
    """sigstore's `cert_is_ca`: a v3 certificate with a critical BasicConstraints(ca) and keyCertSign."""
    from cryptography import x509

    if cert.version != x509.Version.v3:
        return False
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return False
    if not bc.critical or not bc.value.ca:
        return False
    return bool(ku.key_cert_sign)


def _verify_sct(cert: x509.Certificate, chain: list[x509.Certificate], root: Root) -> None:
    """Step 2: exactly one embedded SCT, signed by a trusted CT log over RFC 6962's digitally-signed
    struct (for a precertificate: the issuer's key hash and the TBS without the SCT list)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.certificate_transparency import LogEntryType
    from cryptography.x509.oid import ExtendedKeyUsageOID

    try:
        scts = cert.extensions.get_extension_for_class(x509.PrecertificateSignedCertificateTimestamps).value
    except x509.ExtensionNotFound:
        raise ChainRefused("Certificate does not contain a signed certificate timestamp extension") from None
    if len(scts) != 1:
        raise ChainRefused(f"Expected one certificate timestamp, found {len(scts)}")
    sct = scts[0]
    if sct.entry_type == LogEntryType.PRE_CERTIFICATE:
        if not chain:
            raise ChainRefused("SCT verify: no issuer in the chain")
        issuer = chain[0]
        try:
            eku = issuer.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
            if ExtendedKeyUsageOID.CERTIFICATE_TRANSPARENCY in eku:  # a precertificate signing certificate
                issuer = chain[1]
        except x509.ExtensionNotFound:
            pass
        if not _is_ca(issuer):
            raise ChainRefused("SCT verify: Invalid issuer pubkey basicConstraint (not a CA)")
        issuer_key = issuer.public_key()
        if not isinstance(issuer_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
            raise ChainRefused("SCT verify: invalid issuer pubkey format (not ECDSA or RSA)")
        entry = cert.tbs_precertificate_bytes
        prefix = _key_id(issuer_key)
    else:
        from cryptography.hazmat.primitives import serialization

        entry, prefix = cert.public_bytes(serialization.Encoding.DER), b""
    if len(entry) >= 1 << 24:
        raise ChainRefused(f"Unexpectedly large certificate length: {len(entry)}")
    signed_entry = prefix + len(entry).to_bytes(3, "big") + entry
    ext = sct.extension_bytes
    millis = int(sct.timestamp.replace(tzinfo=UTC).timestamp() * 1000)
    data = struct.pack(f"!BBQH{len(signed_entry)}sH{len(ext)}s", sct.version.value, 0, millis, sct.entry_type.value,
                       signed_entry, len(ext), ext)
    if not isinstance(sct.signature_hash_algorithm, hashes.SHA256):
        raise ChainRefused("Found unexpected hash algorithm in SCT: only SHA256 is supported")
    try:
        _verify_with(root.ct_keys, sct.log_id, sct.signature, data, "CTFE")
    except Invalid as exc:
        raise ChainRefused(f"failed to verify SCT on signing certificate: SCT verify failed: {exc}") from None


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _verify_inclusion(entry: Entry) -> None:
    """Step 4a: the RFC 6962 audit path from the body's leaf hash to the proof's root hash."""
    inner = (entry.proof_index ^ (entry.proof_size - 1)).bit_length()
    border = bin(entry.proof_index >> inner).count("1")
    if len(entry.hashes) != inner + border:
        raise Invalid(f"inclusion proof has wrong size: expected {inner + border}, got {len(entry.hashes)}")
    seed = hashlib.sha256(b"\x00" + entry.body).digest()
    for i, h in enumerate(entry.hashes[:inner]):
        seed = _node(seed, h) if (entry.proof_index >> i) & 1 == 0 else _node(h, seed)
    for h in entry.hashes[inner:]:
        seed = _node(h, seed)
    if seed != entry.root_hash:
        raise Invalid(f"inclusion proof contains invalid root hash: calculated {seed.hex()}, "
                      f"the proof names {entry.root_hash.hex()}")


_NOTE_SIGNATURE = re.compile(r"\u2014 (\S+) (\S+)\n")


def _verify_checkpoint(entry: Entry, root: Root) -> None:
    try:
        _verify_note(entry, root)
    except ValueError as exc:  # base64 that does not decode, as sigstore's parser meets it
        raise Invalid(f"malformed checkpoint: {exc}") from None


def _verify_note(entry: Entry, root: Root) -> None:
    """Step 4b: the checkpoint is a signed note (header, a blank line, `— NAME base64(keyhash4 || sig)`
    lines); the signature whose key hash is the entry's log id verifies over the header by that log's
    key, and the header's root hash is the proof's."""
    text = entry.checkpoint
    if text.count("\n\n") != 1:
        raise Invalid("note must contain one blank line, delineating the text from the signature block")
    split = text.index("\n\n")
    header, data = text[:split + 1], text[split + 2:]
    if not data:
        raise Invalid("malformed Note: must contain at least one signature")
    if data[-1] != "\n":
        raise Invalid("malformed Note: data section must end with newline")
    signatures: list[tuple[bytes, bytes]] = []
    for _name, encoded in _NOTE_SIGNATURE.findall(data):
        raw = base64.b64decode(encoded)
        if len(raw) < 5:
            raise Invalid("malformed Note: signature contains too few bytes")
        signatures.append((raw[:4], raw[4:]))
    lines = header.strip().split("\n")
    if len(lines) < 3:
        raise Invalid("malformed LogCheckpoint: too few items in header")
    if not lines[0]:
        raise Invalid("malformed LogCheckpoint: empty origin")
    try:
        int(lines[1])
    except ValueError:
        raise Invalid("malformed LogCheckpoint: invalid log size") from None
    root_hash = base64.b64decode(lines[2])
    for key_hash, signature in signatures:
        if key_hash == entry.log_id[:4]:
            try:
                _verify_with(root.tlog_keys, entry.log_id, signature, header.encode(), "Rekor")
            except Invalid as exc:
                raise Invalid(f"checkpoint: invalid signature: {exc}") from None
            break
    else:
        raise Invalid(f"checkpoint: Signature not found for log ID {entry.log_id.hex()}")
    if root_hash != entry.root_hash:
        raise Invalid(f"Inclusion proof contains invalid root hash signature: expected {root_hash.hex()} "
                      f"got {entry.root_hash.hex()}")


def _verify_set(entry: Entry, root: Root) -> None:
    """Step 5: the SET signs the RFC 8785 JSON of body, integrated time, log id (hex) and index; with
    these four keys (two strings of base64/hex, two integers) sorted compact JSON is RFC 8785."""
    assert entry.set_signature is not None
    canonical = json.dumps({"body": base64.b64encode(entry.body).decode(), "integratedTime": entry.integrated_time,
                            "logID": entry.log_id.hex(), "logIndex": entry.log_index},
                           sort_keys=True, separators=(",", ":")).encode()
    try:
        _verify_with(root.tlog_keys, entry.log_id, entry.set_signature, canonical, "Rekor")
    except Invalid as exc:
        raise Invalid(f"SET: invalid inclusion promise: {exc}") from None


def _pae(payload_type: str, payload: bytes) -> bytes:
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def _verify_body(entry: Entry, cert: x509.Certificate, payload: bytes, signatures: list[bytes]) -> None:
    """Step 8, as sigstore does for dsse/0.0.1 (the envelope hash is over uncanonicalized JSON and is
    not checked): the payload hash and the signatures with the leaf as verifier."""
    from cryptography.hazmat.primitives import serialization

    try:
        body = json.loads(entry.body)
        if body["kind"] != "dsse" or body["apiVersion"] != "0.0.1":
            raise ValueError("not a dsse/0.0.1 entry")
        spec = body["spec"]
        payload_hash = spec["payloadHash"]
        logged = [(s["signature"], s["verifier"]) for s in spec["signatures"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise Invalid(f"invalid DSSE log entry: {exc!r}") from None
    if payload_hash.get("algorithm") != "sha256":
        raise Invalid("expected SHA256 payload hash in DSSE log entry")
    if payload_hash.get("value") != hashlib.sha256(payload).hexdigest():
        raise Invalid("log entry payload hash does not match bundle")
    verifier = base64.b64encode(cert.public_bytes(serialization.Encoding.PEM)).decode()
    if logged != [(base64.b64encode(sig).decode(), verifier) for sig in signatures]:
        raise Invalid("log entry signatures do not match bundle")


@dataclass(frozen=True)
class Verified:
    payload_type: str
    payload: bytes
    log_index: int
    integrated_time: int


def verify_dsse(parsed: Parsed, cert: x509.Certificate, root: Root) -> Verified:
    """sigstore's `Verifier.verify_dsse` for a v0.3 bundle with a Fulcio leaf and a Rekor v1 DSSE entry.

    `parsed` is `read_bundle`'s. Raises ChainRefused (chain, validity at the log's time, SCT) or
    Invalid (everything else). The identity policy is the caller's.
    """
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    entry, payload, payload_type, signatures = parsed.entry, parsed.payload, parsed.payload_type, parsed.signatures
    # (0) the time: the integrated time, counted only with the inclusion promise that binds it
    if not entry.integrated_time:
        raise Invalid("not enough sources of verified time")
    at = datetime.fromtimestamp(entry.integrated_time, tz=UTC)
    # (1) the chain at that time, (2) the SCT
    chain = _verify_chain(cert, root, at)
    _verify_sct(cert, chain, root)
    # (3) the Sigstore X.509 profile for the leaf
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        extended = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound as exc:
        raise Invalid(f"the signing certificate lacks an extension: {exc}") from None
    if not usage.digital_signature:
        raise Invalid("Key usage is not of type `digital signature`")
    if ExtendedKeyUsageOID.CODE_SIGNING not in extended:
        raise Invalid("Extended usage does not contain `code signing`")
    # (4) inclusion proof and checkpoint, (5) the SET
    try:
        _verify_inclusion(entry)
        _verify_checkpoint(entry, root)
        _verify_set(entry, root)
    except Invalid as exc:
        raise Invalid(f"invalid log entry: {exc}") from None
    # (6) the log's time within the leaf's validity
    if not cert.not_valid_before_utc <= at <= cert.not_valid_after_utc:
        raise ChainRefused(f"invalid signing cert: expired at time of signing, time via the transparency log ({at})")
    # (7) the DSSE signature
    if len(signatures) != 1:
        raise Invalid(f"DSSE: exactly 1 signature allowed, got {len(signatures)}")
    if not signatures[0]:
        raise Invalid("envelope signature must be non-empty")
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise Invalid("DSSE: the signing certificate's key is not an ECDSA key")
    try:
        key.verify(signatures[0], _pae(payload_type, payload), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise Invalid("DSSE: invalid signature") from None
    # (8) the log entry says what the bundle says
    _verify_body(entry, cert, payload, signatures)
    return Verified(payload_type, payload, entry.log_index, entry.integrated_time)


__all__ = ["ChainRefused", "Invalid", "Parsed", "Root", "Unsupported", "Verified", "parse_root", "read_bundle", "verify_dsse"]
