"""An organisation's PKI made in the test with `cryptography`: a root CA, an intermediate, code-signing leaves."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DAY = dt.timedelta(days=1)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme Corp"), x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _usage(*, sign: bool = False, cert_sign: bool = False, encipher: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=sign, content_commitment=False, key_encipherment=encipher, data_encipherment=False,
                         key_agreement=False, key_cert_sign=cert_sign, crl_sign=cert_sign, encipher_only=False,
                         decipher_only=False)


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class CA:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def write(self, path: Path) -> Path:
        path.write_bytes(pem(self.cert))
        return path


def make_ca(cn: str = "Acme Root CA", *, parent: CA | None = None) -> CA:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    issuer = parent.cert.subject if parent else _name(cn)
    builder = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(issuer).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - DAY).not_valid_after(now + 3650 * DAY)
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
               .add_extension(_usage(cert_sign=True), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    if parent is not None:
        builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(parent.key.public_key()),
                                        critical=False)
    return CA(builder.sign(parent.key if parent else key, hashes.SHA256()), key)


def make_leaf(ca: CA, root: Path, *, cn: str = "Acme release signing", key: ec.EllipticCurvePrivateKey | None = None,
              not_before: dt.timedelta = -DAY, not_after: dt.timedelta = 365 * DAY, usage: str = "code-signing",
              chain: list[CA] | None = None, label: str = "leaf") -> tuple[Path, Path]:
    """(private key PEM, chain PEM: the leaf, then `chain`) for a leaf that `ca` issued.

    usage: "code-signing" (KU digitalSignature + EKU codeSigning), "server" (EKU serverAuth only),
    "encipher" (KU keyEncipherment only), or "ca" (a CA certificate used as a leaf).
    """
    key = key or ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    b = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca.cert.subject).public_key(key.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(now + not_before).not_valid_after(now + not_after)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False))
    if usage == "ca":
        b = b.add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True).add_extension(
            _usage(sign=True, cert_sign=True), critical=True)
    else:
        b = b.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        b = b.add_extension(_usage(sign=usage != "encipher", encipher=usage == "encipher"), critical=True)
        eku = ExtendedKeyUsageOID.SERVER_AUTH if usage == "server" else ExtendedKeyUsageOID.CODE_SIGNING
        b = b.add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
    cert = b.sign(ca.key, hashes.SHA256())
    root.mkdir(parents=True, exist_ok=True)
    key_path = root / f"{label}.key"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    chain_path = root / f"{label}-chain.pem"
    chain_path.write_bytes(pem(cert) + b"".join(pem(c.cert) for c in chain or []))
    return key_path, chain_path


def chain_der(chain_pem: Path) -> list[bytes]:
    return [c.public_bytes(serialization.Encoding.DER) for c in x509.load_pem_x509_certificates(chain_pem.read_bytes())]
