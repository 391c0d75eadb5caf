"""A stand-in Sigstore instance, built in the test with `cryptography`: Fulcio, a CT log and Rekor (v1).

Nothing here is fetched or copied from another project: every key, certificate, log entry and the
`trusted_root.json` describing them are made at test time. The pieces are what sigstore-python's
`Verifier.verify_dsse` checks (read from sigstore 4.5.1: sigstore/verify/verifier.py,
sigstore/models.py, sigstore/_internal/{sct,merkle,trust}.py, sigstore/_internal/rekor/checkpoint.py):

- Fulcio: a root CA and an intermediate; a short-lived code-signing leaf per signature with an
  empty subject, the identity as a critical SAN (e-mail or URI), and the OIDC issuer in Fulcio's
  extensions 1.3.6.1.4.1.57264.1.1 (raw bytes) and .1.8 (DER UTF8String);
- a CT log whose key signs a precertificate SCT embedded in the leaf (sigstore refuses a leaf
  without exactly one SCT from a CT log of the trusted root);
- Rekor v1: a `dsse/0.0.1` entry in an RFC 6962 Merkle tree, with its inclusion proof, a signed
  checkpoint (a signed note) and a signed entry timestamp (SET) binding the integrated time, the
  time at which the leaf must have been valid.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rfc8785
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from patchkit.trust.bundles import BUNDLE_MEDIA_TYPE, PAYLOAD_TYPE, _statement, pae, read_artifact_files

ISSUER_OID = ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
ISSUER_V2_OID = ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
SCT_OID = ObjectIdentifier("1.3.6.1.4.1.11129.2.4.2")
GITHUB = "https://token.actions.githubusercontent.com"
WORKFLOW = "https://github.com/acme/patches/.github/workflows/release.yml@refs/tags/v1.0.0"
UTC = dt.UTC


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _spki(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _key_id(key: ec.EllipticCurvePublicKey) -> bytes:
    return hashlib.sha256(_spki(key)).digest()


def _der_utf8(text: str) -> bytes:
    raw = text.encode()
    assert len(raw) < 128
    return bytes([0x0C, len(raw)]) + raw


def _der_octets(raw: bytes) -> bytes:
    n = len(raw)
    if n < 128:
        return bytes([0x04, n]) + raw
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x04, 0x80 | len(size)]) + size + raw


def _ku(*, sign: bool = False, cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=sign, content_commitment=False, key_encipherment=False, data_encipherment=False,
                         key_agreement=False, key_cert_sign=cert_sign, crl_sign=cert_sign, encipher_only=False,
                         decipher_only=False)


# -- RFC 6962 Merkle tree ------------------------------------------------------------------------


def _leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def _node(a: bytes, b: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + a + b).digest()


def _mth(leaves: list[bytes]) -> bytes:
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return _node(_mth(leaves[:k]), _mth(leaves[k:]))


def _path(m: int, leaves: list[bytes]) -> list[bytes]:
    """The RFC 6962 audit path of leaf `m` (hashes from the bottom up)."""
    if len(leaves) == 1:
        return []
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    if m < k:
        return [*_path(m, leaves[:k]), _mth(leaves[k:])]
    return [*_path(m - k, leaves[k:]), _mth(leaves[:k])]


@dataclass
class Instance:
    """One stand-in Sigstore instance: its keys, its Fulcio chain and its log so far."""

    name: str = "standin"
    root_key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    inter_key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    ct_key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    rekor_key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    log: list[bytes] = field(default_factory=list)  # canonicalized bodies, in log order

    def __post_init__(self) -> None:
        now = dt.datetime.now(UTC)
        start, end = now - dt.timedelta(days=365), now + dt.timedelta(days=3650)
        root_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.name),
                               x509.NameAttribute(NameOID.COMMON_NAME, self.name)])
        inter_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.name),
                                x509.NameAttribute(NameOID.COMMON_NAME, f"{self.name}-intermediate")])
        self.root = (x509.CertificateBuilder().subject_name(root_name).issuer_name(root_name)
                     .public_key(self.root_key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(start).not_valid_after(end)
                     .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
                     .add_extension(_ku(cert_sign=True), critical=True)
                     .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.root_key.public_key()), critical=False)
                     .sign(self.root_key, hashes.SHA256()))
        self.intermediate = (x509.CertificateBuilder().subject_name(inter_name).issuer_name(root_name)
                             .public_key(self.inter_key.public_key()).serial_number(x509.random_serial_number())
                             .not_valid_before(start).not_valid_after(end)
                             .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                             .add_extension(_ku(cert_sign=True), critical=True)
                             .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
                             .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.inter_key.public_key()), critical=False)
                             .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.root_key.public_key()),
                                            critical=False)
                             .sign(self.root_key, hashes.SHA256()))
        self.log = [f"filler entry {i}".encode() for i in range(5)]

    # -- Fulcio + CT log ---------------------------------------------------------------------
    def leaf(self, key: ec.EllipticCurvePrivateKey, *, identity: str, issuer: str, at: dt.datetime) -> x509.Certificate:
        """A Fulcio-style leaf for `identity`, valid for ten minutes from `at`, with an embedded SCT."""
        san: x509.GeneralName = (x509.RFC822Name(identity) if "@" in identity and "://" not in identity
                                 else x509.UniformResourceIdentifier(identity))
        serial = x509.random_serial_number()
        builder = (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(self.intermediate.subject)
                   .public_key(key.public_key()).serial_number(serial)
                   .not_valid_before(at).not_valid_after(at + dt.timedelta(minutes=10))
                   .add_extension(_ku(sign=True), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.inter_key.public_key()),
                                  critical=False)
                   .add_extension(x509.SubjectAlternativeName([san]), critical=True)
                   .add_extension(x509.UnrecognizedExtension(ISSUER_OID, issuer.encode()), critical=False)
                   .add_extension(x509.UnrecognizedExtension(ISSUER_V2_OID, _der_utf8(issuer)), critical=False))
        precert = builder.sign(self.inter_key, hashes.SHA256())
        # The SCT signs the precertificate: the final TBS without the SCT extension (added last).
        tbs = precert.tbs_certificate_bytes
        ts = int(at.timestamp() * 1000)
        signed_entry = _key_id(self.inter_key.public_key()) + struct.pack("!I", len(tbs))[1:] + tbs
        data = struct.pack(f"!BBQH{len(signed_entry)}sH", 0, 0, ts, 1, signed_entry, 0)
        sig = self.ct_key.sign(data, ec.ECDSA(hashes.SHA256()))
        sct = (bytes([0]) + _key_id(self.ct_key.public_key()) + struct.pack("!QH", ts, 0)
               + bytes([4, 3]) + struct.pack("!H", len(sig)) + sig)
        sct_list = struct.pack("!HH", len(sct) + 2, len(sct)) + sct
        final = builder.add_extension(x509.UnrecognizedExtension(SCT_OID, _der_octets(sct_list)), critical=False)
        cert = final.sign(self.inter_key, hashes.SHA256())
        assert cert.tbs_precertificate_bytes == tbs
        return cert

    # -- Rekor v1 ----------------------------------------------------------------------------
    def log_dsse(self, cert: x509.Certificate, payload: bytes, sig: bytes, *, at: dt.datetime) -> dict[str, Any]:
        """Append a dsse/0.0.1 entry and return its bundle form (inclusion proof, checkpoint, SET)."""
        envelope: dict[str, Any] = {"payload": _b64(payload), "payloadType": PAYLOAD_TYPE, "signatures": [{"sig": _b64(sig)}]}
        body: dict[str, Any] = {"apiVersion": "0.0.1", "kind": "dsse", "spec": {
            "envelopeHash": {"algorithm": "sha256", "value": hashlib.sha256(rfc8785.dumps(envelope)).hexdigest()},
            "payloadHash": {"algorithm": "sha256", "value": hashlib.sha256(payload).hexdigest()},
            "signatures": [{"signature": _b64(sig), "verifier": _b64(cert.public_bytes(serialization.Encoding.PEM))}],
        }}
        canonical = rfc8785.dumps(body)
        index = len(self.log)
        self.log.append(canonical)
        self.log += [f"later entry {index}-{i}".encode() for i in range(3)]  # the tree keeps growing
        leaves = [_leaf_hash(e) for e in self.log]
        root = _mth(leaves)
        proof = _path(index, leaves)
        log_id = _key_id(self.rekor_key.public_key())
        integrated = int(at.timestamp())
        set_payload = rfc8785.dumps({"body": _b64(canonical), "integratedTime": integrated, "logID": log_id.hex(),
                                     "logIndex": index})
        note = f"{self.name} rekor - 1234567890\n{len(self.log)}\n{_b64(root)}\n"
        note_sig = self.rekor_key.sign(note.encode(), ec.ECDSA(hashes.SHA256()))
        checkpoint = note + f"\n\u2014 {self.name}-rekor {_b64(log_id[:4] + note_sig)}\n"
        return {
            "logIndex": str(index),
            "logId": {"keyId": _b64(log_id)},
            "kindVersion": {"kind": "dsse", "version": "0.0.1"},
            "integratedTime": str(integrated),
            "inclusionPromise": {"signedEntryTimestamp": _b64(self.rekor_key.sign(set_payload, ec.ECDSA(hashes.SHA256())))},
            "inclusionProof": {"logIndex": str(index), "rootHash": _b64(root), "treeSize": str(len(self.log)),
                               "hashes": [_b64(h) for h in proof], "checkpoint": {"envelope": checkpoint}},
            "canonicalizedBody": _b64(canonical),
        }

    # -- the whole: a keyless signature --------------------------------------------------------
    def sign_payload(self, payload: bytes, *, identity: str = WORKFLOW, issuer: str = GITHUB,
                     at: dt.datetime | None = None, logged_at: dt.datetime | None = None) -> bytes:
        """A Sigstore bundle v0.3 for a DSSE envelope over `payload`, as `sigstore sign` writes one
        (the leaf in `certificate`, one tlog entry). `logged_at` (default: a minute after `at`) is
        the log's integrated time."""
        at = at or dt.datetime.now(UTC) - dt.timedelta(minutes=1)
        key = ec.generate_private_key(ec.SECP256R1())  # ephemeral, as with Fulcio
        cert = self.leaf(key, identity=identity, issuer=issuer, at=at - dt.timedelta(seconds=30))
        sig = key.sign(pae(payload), ec.ECDSA(hashes.SHA256()))
        entry = self.log_dsse(cert, payload, sig, at=logged_at or at)
        bundle = {
            "mediaType": BUNDLE_MEDIA_TYPE,
            "verificationMaterial": {"certificate": {"rawBytes": _b64(cert.public_bytes(serialization.Encoding.DER))},
                                     "tlogEntries": [entry]},
            "dsseEnvelope": {"payload": _b64(payload), "payloadType": PAYLOAD_TYPE,
                             "signatures": [{"sig": _b64(sig), "keyid": ""}]},
        }
        return (json.dumps(bundle, separators=(",", ":")) + "\n").encode()

    def sign_artifact(self, directory: Path, **kw: Any) -> bytes:
        """Sign an artifact directory keyless, with patchkit's own in-toto statement; writes patchkit.sig."""
        files = read_artifact_files(directory)
        payload = _statement(directory.name, {n: hashlib.sha256(b).hexdigest() for n, b in files.items()}, ["patchkit.sig"])
        bundle = self.sign_payload(payload, **kw)
        (directory / "patchkit.sig").write_bytes(bundle)
        return bundle

    # -- trust material ----------------------------------------------------------------------
    def trusted_root(self) -> dict[str, Any]:
        start = "2020-01-01T00:00:00Z"

        def log(key: ec.EllipticCurvePrivateKey, url: str) -> dict[str, Any]:
            return {"baseUrl": url, "hashAlgorithm": "SHA2_256",
                    "publicKey": {"rawBytes": _b64(_spki(key.public_key())), "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                                  "validFor": {"start": start}},
                    "logId": {"keyId": _b64(_key_id(key.public_key()))}}

        der = serialization.Encoding.DER
        return {
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [log(self.rekor_key, f"https://rekor.{self.name}.invalid")],
            "certificateAuthorities": [{
                "subject": {"organization": self.name, "commonName": self.name}, "uri": f"https://fulcio.{self.name}.invalid",
                "certChain": {"certificates": [{"rawBytes": _b64(c.public_bytes(der))} for c in (self.intermediate, self.root)]},
                "validFor": {"start": start}}],
            "ctlogs": [log(self.ct_key, f"https://ctfe.{self.name}.invalid")],
            "timestampAuthorities": [],
        }

    def client_trust_config(self) -> dict[str, Any]:
        """The trusted root wrapped as a ClientTrustConfig (what `model_signing verify sigstore --trust_config` reads)."""
        def svc(url: str) -> dict[str, Any]:
            return {"url": url, "majorApiVersion": 1, "validFor": {"start": "2020-01-01T00:00:00Z"}, "operator": self.name}

        return {
            "mediaType": "application/vnd.dev.sigstore.clienttrustconfig.v0.1+json",
            "trustedRoot": self.trusted_root(),
            "signingConfig": {"mediaType": "application/vnd.dev.sigstore.signingconfig.v0.2+json",
                              "caUrls": [svc(f"https://fulcio.{self.name}.invalid")],
                              "oidcUrls": [svc(f"https://oauth2.{self.name}.invalid/auth")],
                              "rekorTlogUrls": [svc(f"https://rekor.{self.name}.invalid")], "tsaUrls": [],
                              "rekorTlogConfig": {"selector": "ANY"}, "tsaConfig": {"selector": "ANY"}},
        }

    # -- across processes (the Action's steps run `patchkit` as a program) -----------------------
    def save(self, path: Path) -> Path:
        """Keys, certificates and log as JSON, so another process signs as the same instance."""
        pem = serialization.Encoding.PEM
        raw = serialization.PrivateFormat.PKCS8
        keys = {k: getattr(self, k).private_bytes(pem, raw, serialization.NoEncryption()).decode()
                for k in ("root_key", "inter_key", "ct_key", "rekor_key")}
        certs = {c: _b64(getattr(self, c).public_bytes(serialization.Encoding.DER)) for c in ("root", "intermediate")}
        path.write_text(json.dumps({"name": self.name, **keys, **certs, "log": [_b64(e) for e in self.log]}))
        return path

    @classmethod
    def load(cls, path: Path) -> Instance:
        doc = json.loads(path.read_text())
        inst = cls.__new__(cls)  # not __post_init__: the certificates are the saved ones
        inst.name = doc["name"]
        for k in ("root_key", "inter_key", "ct_key", "rekor_key"):
            key = serialization.load_pem_private_key(doc[k].encode(), None)
            assert isinstance(key, ec.EllipticCurvePrivateKey)
            setattr(inst, k, key)
        inst.root = x509.load_der_x509_certificate(base64.b64decode(doc["root"]))
        inst.intermediate = x509.load_der_x509_certificate(base64.b64decode(doc["intermediate"]))
        inst.log = [base64.b64decode(e) for e in doc["log"]]
        return inst

    def write_trusted_root(self, path: Path) -> Path:
        path.write_text(json.dumps(self.trusted_root(), indent=1))
        return path

    def write_client_trust_config(self, path: Path) -> Path:
        path.write_text(json.dumps(self.client_trust_config(), indent=1))
        return path
