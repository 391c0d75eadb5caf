"""Organisation certificates: X.509 code-signing leaves in model-signing's `certificate` method.

A signature made with `patchkit sign --certificate-chain chain.pem --key leaf.pem` carries the
leaf certificate and its intermediates (DER, leaf first) in the bundle's
`verificationMaterial.x509CertificateChain`, exactly where `model_signing sign certificate`
puts them, so `model_signing verify certificate --certificate_chain root.pem` accepts it.

patchkit accepts such a signature when one CA of the trust store (`patchkit trust add-ca`)
issued the leaf, within the CA's scopes, and the leaf is an ECDSA P-256 end-entity
certificate for code signing: key usage digitalSignature, and if it lists extended key usages,
codeSigning among them. Validity is checked at the signature's time: the publish time a
verified registry index attests for the artifact, else now. model-signing checks the chain at
the leaf's notBefore instead, so it accepts expired leaves that patchkit refuses.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from patchkit._internal.clock import fmt_time, now_utc
from patchkit._internal.files import read_regular
from patchkit._internal.jsonio import expect_list, expect_str, require
from patchkit.errors import IntegrityError, InvalidInputError, NotFoundError, TrustError, UsageError
from patchkit.trust.keys import PrivateKey, keyid_of, public_pem

if TYPE_CHECKING:
    from cryptography import x509

    from patchkit.trust.store import CAEntry

MAX_CHAIN_BYTES = 256 * 1024
MAX_CHAIN_CERTS = 8
_HINT_USAGE = "issue the leaf for code signing: key usage digitalSignature, extended key usage codeSigning"


def _load_pems(path: Path, what: str) -> list[x509.Certificate]:
    from cryptography import x509

    try:
        data = read_regular(Path(path), MAX_CHAIN_BYTES, what=f"{what} {path}")
    except FileNotFoundError:
        raise NotFoundError(f"{what} {path} does not exist", "check the path") from None
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise InvalidInputError(f"{path} holds no PEM certificate", "pass PEM certificates (-----BEGIN CERTIFICATE-----)") from None
    if len(certs) > MAX_CHAIN_CERTS:
        raise InvalidInputError(f"{path} holds {len(certs)} certificates; a chain has at most {MAX_CHAIN_CERTS}",
                                "keep the leaf and its intermediates only")
    return certs


def _der(cert: x509.Certificate) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.DER)


def _common_name(cert: x509.Certificate) -> str:
    from cryptography.x509.oid import NameOID

    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = attrs[0].value if attrs else cert.subject.rfc4514_string()
    return str(value if isinstance(value, str) else value.decode("utf-8", "replace"))[:80] or "(no subject)"


def _is_ca(cert: x509.Certificate) -> bool:
    from cryptography import x509

    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def usage_problem(cert: x509.Certificate) -> str | None:
    """Why `cert` may not sign patches (None if it may): end entity, digitalSignature, codeSigning."""
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    if _is_ca(cert):
        return "it is a CA certificate, not a signing leaf"
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        if not ku.digital_signature:
            return "its key usage does not include digitalSignature"
    except x509.ExtensionNotFound:
        ku = None
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        if ExtendedKeyUsageOID.CODE_SIGNING not in eku and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in eku:
            return "its extended key usage does not include codeSigning"
    except x509.ExtensionNotFound:
        if ku is None:
            return "it states neither a key usage nor an extended key usage"
    return None


def validity_problem(cert: x509.Certificate, at: datetime) -> str | None:
    if at < cert.not_valid_before_utc:
        return f"it is not valid until {fmt_time(cert.not_valid_before_utc)} (checked at {fmt_time(at)})"
    if at > cert.not_valid_after_utc:
        return f"it expired at {fmt_time(cert.not_valid_after_utc)} (checked at {fmt_time(at)})"
    return None


def _spki_pem(cert: x509.Certificate) -> bytes | None:
    from cryptography.hazmat.primitives import serialization

    try:
        return cert.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    except ValueError:
        return None


def _p256_key(cert: x509.Certificate, what: str) -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = cert.public_key()
    except ValueError:
        raise IntegrityError(f"{what}: the certificate's key cannot be read", "re-issue the certificate") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise TrustError(f"{what}: the certificate's key is not ECDSA P-256", "patchkit signs with P-256 keys")
    return key


# -- signing ----------------------------------------------------------------------------------


def signing_chain(chain_path: Path, key: PrivateKey) -> list[bytes]:
    """The DER chain for a bundle: the leaf whose key is `key` first, then the other certificates.

    Refuses a leaf that `verify` would refuse on its own (wrong usage, expired, not yet valid).
    """
    certs = _load_pems(chain_path, "certificate chain")
    pub = public_pem(key.public_key())
    leaves = [c for c in certs if _spki_pem(c) == pub]
    if not leaves:
        raise UsageError(f"no certificate in {chain_path} is for the key given with --key",
                         "pass the chain whose first certificate was issued for this key (leaf first, then intermediates)")
    leaf = leaves[0]
    problem = usage_problem(leaf) or validity_problem(leaf, now_utc())
    if problem:
        raise TrustError(f"the leaf certificate {_common_name(leaf)!r} in {chain_path} cannot sign: {problem}", _HINT_USAGE)
    return [_der(leaf)] + [_der(c) for c in certs if c is not leaf]


def chain_material(chain: list[bytes]) -> dict[str, Any]:
    """The bundle's verificationMaterial for a certificate chain, as model-signing writes it."""
    return {"x509CertificateChain": {"certificates": [{"rawBytes": base64.b64encode(d).decode()} for d in chain]},
            "tlogEntries": []}


def parse_material(material: Any, source: str) -> list[bytes] | None:
    """The DER chain in a bundle's verificationMaterial; None when it names a public key instead."""
    if not isinstance(material, dict) or "x509CertificateChain" not in material:
        return None
    try:
        items = require(require(material, "x509CertificateChain"), "certificates")
        items = expect_list(items, "certificates", min_len=1, max_len=MAX_CHAIN_CERTS)
        out = [base64.b64decode(expect_str(require(c, "rawBytes"), "rawBytes"), validate=True) for c in items]
    except ValueError:  # Malformed is one, and so are bad base64 and non-ASCII text

        raise IntegrityError(f"{source}: malformed certificate chain", "re-sign with `patchkit sign --certificate-chain`") from None
    if sum(len(d) for d in out) > MAX_CHAIN_BYTES:
        raise IntegrityError(f"{source}: the certificate chain is larger than a chain can be", "re-sign the patch")
    return out


def leaf_public_key(chain: list[bytes], source: str) -> Any:
    from cryptography import x509

    try:
        leaf = x509.load_der_x509_certificate(chain[0])
    except ValueError:
        raise IntegrityError(f"{source}: the signing certificate is not valid DER", "re-sign the patch") from None
    return _p256_key(leaf, source)


# -- trusting ---------------------------------------------------------------------------------


def load_ca_certificate(path: Path) -> tuple[str, bytes, str]:
    """(PEM, DER, common name) of one CA certificate, for `trust add-ca`."""
    from cryptography.hazmat.primitives import serialization

    certs = _load_pems(path, "CA certificate")
    if len(certs) != 1:
        raise UsageError(f"{path} holds {len(certs)} certificates", "pass exactly one CA certificate (the root or an intermediate)")
    cert = certs[0]
    if not _is_ca(cert):
        raise InvalidInputError(f"{path} is not a CA certificate (basicConstraints CA:TRUE is missing)",
                                "pass the organisation's root or intermediate CA, not a leaf")
    return cert.public_bytes(serialization.Encoding.PEM).decode(), _der(cert), _common_name(cert)


@dataclass(frozen=True)
class CertifiedKey:
    """The leaf key of a chain that trusted CAs issued: what the trust store turns into a signer.

    Plain data, so this module needs nothing from `patchkit.trust` (which sits above it).
    """

    keyid: str
    public_key_pem: str
    scopes: list[str]
    label: str  # the leaf's common name
    certificate: str  # "CN (certificate from CA, ...)"


def leaf_entry(chain: list[bytes], cas: list[CAEntry], *, at: datetime, where: str) -> CertifiedKey:
    """The leaf key of `chain`, with the scopes of every trusted CA that issued it at `at`.

    Expired, not-yet-valid and wrong-usage leaves, and leaves no trusted CA issued, are
    TrustErrors naming the cause.
    """
    from cryptography import x509
    from cryptography.x509.verification import ExtensionPolicy, PolicyBuilder, Store, VerificationError

    try:
        certs = [x509.load_der_x509_certificate(d) for d in chain]
    except ValueError:
        raise IntegrityError("the signature's certificate chain is not valid DER", "re-sign the patch") from None
    leaf, intermediates = certs[0], certs[1:]
    who = _common_name(leaf)
    key = _p256_key(leaf, f"certificate {who!r}")
    problem = usage_problem(leaf) or validity_problem(leaf, at)
    if problem:
        raise TrustError(f"the signing certificate {who!r} (issued by {leaf.issuer.rfc4514_string()}) is refused: {problem}",
                         _HINT_USAGE if "usage" in problem or "CA" in problem else
                         "ask the publisher to re-sign with a currently valid certificate")
    if not cas:
        raise TrustError(f"the signature is made with certificate {who!r}, and the trust store ({where}) trusts no CA",
                         "if you trust the organisation, run `patchkit trust add-ca ROOT_PEM --scope NS/*`")
    scopes: set[str] = set()
    issuers: list[str] = []
    for ca in cas:
        try:
            anchor = x509.load_pem_x509_certificate(ca.certificate_pem.encode())
        except ValueError:
            raise InvalidInputError(f"trust store {where}: CA {ca.display} is not a valid certificate",
                                    "re-add it with `patchkit trust add-ca`") from None
        verifier = (PolicyBuilder().store(Store([anchor])).time(at).max_chain_depth(MAX_CHAIN_CERTS)
                    .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=ExtensionPolicy.permit_all())
                    .build_client_verifier())
        try:
            verifier.verify(leaf, intermediates)
        except VerificationError:
            continue
        scopes.update(ca.scopes)
        issuers.append(ca.display)
    if not issuers:
        raise TrustError(
            f"the signing certificate {who!r} was issued by {leaf.issuer.rfc4514_string()}, which no CA in the trust "
            f"store vouches for at {fmt_time(at)} (trusted: {', '.join(c.display for c in cas)})",
            "if you trust that organisation, run `patchkit trust add-ca ROOT_PEM --scope NS/*`",
        )
    return CertifiedKey(keyid=keyid_of(key), public_key_pem=public_pem(key).decode(), scopes=sorted(scopes),
                        label=who, certificate=f"{who} (certificate from {', '.join(issuers)})")


__all__ = ["CertifiedKey", "chain_material", "leaf_entry", "leaf_public_key", "load_ca_certificate", "parse_material", "signing_chain",
           "usage_problem", "validity_problem"]
