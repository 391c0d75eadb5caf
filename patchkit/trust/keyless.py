"""Keyless (Sigstore) signatures: an identity in the trust store instead of a public key.

A keyless bundle is a Sigstore bundle v0.3 whose `verificationMaterial` holds one short-lived
leaf `certificate` from a Fulcio CA, naming the signer's identity (an e-mail, or a CI workflow
reference) and its OIDC issuer, and one transparency-log entry (Rekor) with its inclusion proof,
signed checkpoint and signed entry timestamp. It holds the same DSSE envelope over the same
in-toto statement as a key bundle, so model-signing's `verify sigstore` reads it too.

patchkit accepts it when an `[[identity]]` entry of the trust store names its issuer exactly and
its identity (exactly, or by a pattern whose `*` matches a run of characters without `@`, so a
workflow pattern without `@` never accepts a ref), and the entry's trusted root vouches for the
chain at the log's time, the SCT, the log entry and the signature. All of it is offline: the
trusted root is in the trust store (or, for the public-good instance, in sigstore-python's local
TUF cache or the copy it ships).

Those checks are `patchkit.trust.sigstore_native`'s, with `cryptography` alone: importing
sigstore-python costs most of a second, which would make `verify` of a keyless bundle as slow as
`model_signing verify sigstore`. They are sigstore-python's `Verifier.verify_dsse`, step for step
(a test runs both on the same bundles and asserts the same verdicts); bundles with what they do not
cover (RFC 3161 signed timestamps, Rekor v2 entries) go to sigstore-python itself. The keyless extra
is still required to verify, as before: its resolution brings the `cryptography` whose path
validation the chain check uses (sigstore-python needs >= 47), and the public-good trusted root.
sigstore-python is imported only to sign and for those bundles.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from patchkit.errors import IntegrityError, InvalidInputError, MissingExtraError, TrustError, UsageError

if TYPE_CHECKING:
    from cryptography import x509

    from patchkit.trust import sigstore_native as native
    from patchkit.trust.store import IdentityEntry

PUBLIC_GOOD = "public-good"
TRUSTED_ROOT_MEDIA_TYPE = "application/vnd.dev.sigstore.trustedroot+json;version=0.1"
CLIENT_TRUST_CONFIG_MEDIA_TYPE = "application/vnd.dev.sigstore.clienttrustconfig.v0.1+json"
MAX_TRUSTED_ROOT_BYTES = 1024 * 1024
_ISSUER_OID = "1.3.6.1.4.1.57264.1.1"  # Fulcio: the OIDC issuer, raw bytes
_ISSUER_V2_OID = "1.3.6.1.4.1.57264.1.8"  # Fulcio: the OIDC issuer, a DER UTF8String
_OTHERNAME_OID = "1.3.6.1.4.1.57264.1.7"  # Fulcio: an identity that is neither e-mail nor URI
_POLICY = "identity policy: "
_PUBLIC_GOOD_TUF = "https://tuf-repo-cdn.sigstore.dev"
_HINT_RESIGN = "the patch or its signature was altered, or it was not logged; do not use it"


def is_keyless(material: Any) -> bool:
    """Whether a bundle's verificationMaterial is a Fulcio leaf (`certificate`) rather than a key or a chain."""
    return isinstance(material, dict) and "certificate" in material and "publicKey" not in material \
        and "x509CertificateChain" not in material


# -- identities ---------------------------------------------------------------------------------


def validate_identity(pattern: str) -> str:
    """An identity to trust: exact, or with `*` (a run of characters without `@`). Not `*` alone."""
    if not pattern or any(c.isspace() for c in pattern) or not pattern.replace("*", ""):
        raise UsageError(f"invalid identity {pattern!r}",
                         "give an e-mail (release@acme.example) or a workflow reference, e.g. "
                         "https://github.com/acme/patches/.github/workflows/release.yml@refs/tags/*")
    return pattern


def validate_issuer(issuer: str) -> str:
    if not re.fullmatch(r"https://[^\s/]+(/\S*)?", issuer):
        raise UsageError(f"invalid OIDC issuer {issuer!r}",
                         "give the issuer's URL, e.g. https://token.actions.githubusercontent.com")
    return issuer


def identity_matches(pattern: str, identity: str) -> bool:
    """`pattern` equals `identity`, each `*` standing for a run of characters other than `@`."""
    if "*" not in pattern:
        return pattern == identity
    regex = "[^@]*".join(re.escape(part) for part in pattern.split("*"))
    return re.fullmatch(regex, identity) is not None


@dataclass(frozen=True)
class LeafIdentity:
    """What a Fulcio leaf claims (read without checking anything): its issuer and its identities."""

    issuer: str | None
    identities: list[str]


def _load_leaf(material: dict[str, Any], source: str) -> x509.Certificate:
    from cryptography import x509

    try:
        raw = material["certificate"]["rawBytes"]
        if not isinstance(raw, str):
            raise TypeError
        return x509.load_der_x509_certificate(base64.b64decode(raw, validate=True))
    except (KeyError, TypeError, ValueError):
        raise IntegrityError(f"{source}: the signing certificate is missing or not valid DER",
                             "re-sign the patch with `patchkit sign --keyless`") from None


def leaf_identity(cert: x509.Certificate) -> LeafIdentity:
    from cryptography import x509

    issuer: str | None = None
    for ext in cert.extensions:
        oid = ext.oid.dotted_string
        if oid in (_ISSUER_OID, _ISSUER_V2_OID) and isinstance(ext.value, x509.UnrecognizedExtension):
            raw = ext.value.value
            if oid == _ISSUER_V2_OID:  # DER UTF8String, short form (issuer URLs are short)
                raw = raw[2:] if len(raw) >= 2 and raw[0] == 0x0C and raw[1] == len(raw) - 2 else b""
            text = raw.decode("utf-8", "replace")
            if issuer is None or oid == _ISSUER_V2_OID:
                issuer = text or issuer
    names: list[str] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names += san.get_values_for_type(x509.RFC822Name) + san.get_values_for_type(x509.UniformResourceIdentifier)
        names += [o.value.decode("utf-8", "replace") for o in san.get_values_for_type(x509.OtherName)
                  if o.type_id.dotted_string == _OTHERNAME_OID]
    except x509.ExtensionNotFound:
        pass
    return LeafIdentity(issuer, names)


# -- trusted roots ------------------------------------------------------------------------------


def normalize_trusted_root(data: bytes, where: str) -> bytes:
    """A trusted root (or a ClientTrustConfig, whose trusted root is taken) as canonical JSON bytes.

    Checked for shape only, so `trust add-identity` works without the keyless extra; sigstore
    parses it in full when it first verifies.
    """
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise InvalidInputError(f"{where} is not JSON", "pass a Sigstore trusted_root.json") from None
    if isinstance(doc, dict) and doc.get("mediaType") == CLIENT_TRUST_CONFIG_MEDIA_TYPE:
        doc = doc.get("trustedRoot")
    if not isinstance(doc, dict) or doc.get("mediaType") != TRUSTED_ROOT_MEDIA_TYPE:
        raise InvalidInputError(f"{where} is not a Sigstore trusted root (mediaType {TRUSTED_ROOT_MEDIA_TYPE})",
                                "pass the trusted_root.json of the Sigstore instance that signs")
    for part in ("certificateAuthorities", "tlogs", "ctlogs"):
        if not isinstance(doc.get(part), list) or not doc[part]:
            raise InvalidInputError(f"{where}: the trusted root lists no {part}",
                                    "a keyless signature needs a Fulcio CA, a Rekor log and a CT log")
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _sigstore(command: str) -> None:
    import importlib.util

    if importlib.util.find_spec("sigstore") is None:
        raise MissingExtraError(command, ["sigstore"], "keyless")


def _trusted_root(identity: IdentityEntry, cache: dict[str, Any]) -> Any:
    """sigstore's TrustedRoot for an identity entry (parsed once per process per root)."""
    key = identity.trusted_root_sha256 or PUBLIC_GOOD
    if key in cache:
        return cache[key]
    from sigstore.models import ClientTrustConfig, TrustedRoot
    from sigstore_models.trustroot import v1

    try:
        if identity.trusted_root is None:
            import logging

            # offline=True reads sigstore's local TUF cache (or the copy it ships) and says so on stderr
            logging.getLogger("sigstore._internal.tuf").setLevel(logging.ERROR)
            root = ClientTrustConfig.production(offline=True).trusted_root
        else:
            root = TrustedRoot(v1.TrustedRoot.from_json(identity.trusted_root))
    except Exception as exc:  # sigstore and pydantic raise many kinds; each means "unusable root"
        raise InvalidInputError(f"the trusted root for identity {identity.display} cannot be read: {exc}",
                                "re-add it with `patchkit trust add-identity --trusted-root FILE`") from None
    cache[key] = root
    return root


def _public_good_root() -> bytes:
    """The public-good trusted root, where `ClientTrustConfig.production(offline=True)` reads it:
    sigstore-python's TUF targets cache, else the copy its package ships (read, not imported)."""
    import importlib.util
    from pathlib import Path
    from urllib.parse import quote

    import platformdirs

    repo = quote(_PUBLIC_GOOD_TUF, safe="")
    cached = Path(platformdirs.user_cache_dir("sigstore-python", "sigstore")) / "tuf" / repo / "trusted_root.json"
    if cached.is_file():
        return cached.read_bytes()
    spec = importlib.util.find_spec("sigstore")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        shipped = Path(location) / "_store" / repo / "trusted_root.json"
        if shipped.is_file():
            return shipped.read_bytes()
    raise FileNotFoundError("sigstore-python's copy of the public-good trusted root")


def _native_root(identity: IdentityEntry, cache: dict[str, Any]) -> native.Root:
    """The parsed trusted root of an identity entry (once per process per root)."""
    from patchkit.trust import sigstore_native as native

    key = "native:" + (identity.trusted_root_sha256 or PUBLIC_GOOD)
    if key in cache:
        root: native.Root = cache[key]
        return root
    try:
        root = native.parse_root(identity.trusted_root if identity.trusted_root is not None else _public_good_root())
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"the trusted root for identity {identity.display} cannot be read: {exc}",
                                "re-add it with `patchkit trust add-identity --trusted-root FILE`") from None
    cache[key] = root
    return root


class _Policy:
    """sigstore's VerificationPolicy for one identity entry: the issuer exactly, the identity by pattern."""

    def __init__(self, identity: IdentityEntry) -> None:
        self.identity = identity

    def verify(self, cert: x509.Certificate) -> None:
        from sigstore.errors import VerificationError

        claimed = leaf_identity(cert)
        if claimed.issuer != self.identity.issuer:
            raise VerificationError(f"{_POLICY}issuer {claimed.issuer!r} is not {self.identity.issuer!r}")
        if not any(identity_matches(self.identity.identity, n) for n in claimed.identities):
            raise VerificationError(f"{_POLICY}{claimed.identities} do not match {self.identity.identity!r}")


@dataclass(frozen=True)
class KeylessSigner:
    """A verified keyless signature: who signed, per which identity entries, and when the log saw it."""

    identity: str
    issuer: str
    matched: list[IdentityEntry]
    public_key_pem: str
    log_index: int
    logged_at: datetime | None


def _refused(text: str, who: str, source: str) -> TrustError:
    return TrustError(f"{source}: the signing certificate of {who} is refused: {text}",
                      "it does not chain to the trusted Sigstore instance's CA, or was not valid when the log "
                      "recorded the signature; ask the publisher to re-sign")


def _classify(exc: Exception, who: str, source: str) -> Exception:
    """sigstore raises one error class for every step; patchkit's exit codes tell trust from integrity."""
    from sigstore.errors import CertValidationError

    text = str(exc).split(": expected log_index")[0]  # sigstore appends the whole proof, bytes and all
    if isinstance(exc, CertValidationError) or "expired at time of signing" in text or "SCT" in text:
        return _refused(text, who, source)
    if text.startswith(_POLICY):
        return TrustError(f"{source}: {who}: {text}", "check `patchkit trust list`")
    return IntegrityError(f"{source}: the keyless signature of {who} does not verify: {text}", _HINT_RESIGN)


def open_keyless(data: bytes, material: dict[str, Any], identities: Sequence[IdentityEntry], *, source: str,
                 where: str, cache: dict[str, Any]) -> tuple[bytes, KeylessSigner]:
    """Verify a keyless bundle against the identity entries that name its leaf; return its payload.

    No entry naming the leaf's issuer and identity: TrustError (exit 4), before any cryptography.
    A chain the entry's trusted root does not vouch for at the log's time: TrustError.
    A missing, altered or inconsistent log entry, or a bad signature: IntegrityError (exit 3).
    """
    cert = _load_leaf(material, source)
    claimed = leaf_identity(cert)
    who = ", ".join(claimed.identities) or "(no identity)"
    by_identity = [i for i in identities if any(identity_matches(i.identity, n) for n in claimed.identities)]
    candidates = [i for i in by_identity if i.issuer == claimed.issuer]
    if not candidates:
        if by_identity:
            raise TrustError(
                f"{source} is signed keyless by {who} with a token from issuer {claimed.issuer}, but the trust store "
                f"({where}) trusts that identity only from {', '.join(sorted({i.issuer for i in by_identity}))}",
                "an identity counts only with the issuer it was added with; anyone who controls another issuer can "
                "claim the same name")
        trusted = ", ".join(i.display for i in identities) or "none"
        raise TrustError(f"{source} is signed keyless by {who} (issuer {claimed.issuer}), which no identity in the "
                         f"trust store ({where}) matches (trusted identities: {trusted})",
                         "if you trust that signer, run `patchkit trust add-identity --scope NS/* --issuer URL "
                         "--identity ID`")
    _sigstore("verify")
    from patchkit.trust import sigstore_native as native

    try:
        parsed = native.read_bundle(json.loads(data))
    except native.Unsupported:
        return _open_with_sigstore(data, cert, claimed, candidates, who, source, cache)
    except native.Invalid as exc:
        raise IntegrityError(f"{source}: the keyless bundle is malformed: {exc}", _HINT_RESIGN) from None
    matched: list[IdentityEntry] = []
    verified: native.Verified | None = None
    first: Exception | None = None
    for identity in candidates:  # each already names the leaf's issuer and identity: the policy holds
        try:
            verified = native.verify_dsse(parsed, cert, _native_root(identity, cache))
        except native.ChainRefused as exc:
            first = first or _refused(str(exc), who, source)
            continue
        except native.Invalid as exc:
            first = first or IntegrityError(f"{source}: the keyless signature of {who} does not verify: {exc}",
                                            _HINT_RESIGN)
            continue
        matched.append(identity)
    if verified is None or not matched:
        assert first is not None
        raise first
    return _signed(cert, claimed, matched, verified.payload_type, verified.payload, verified.log_index,
                   verified.integrated_time, source)


def _signed(cert: x509.Certificate, claimed: LeafIdentity, matched: list[IdentityEntry], payload_type: str,
            payload: bytes, log_index: int, integrated_time: int | None, source: str) -> tuple[bytes, KeylessSigner]:
    from datetime import UTC

    from cryptography.hazmat.primitives import serialization

    if payload_type != "application/vnd.in-toto+json":
        raise IntegrityError(f"{source}: unexpected DSSE payload type {payload_type!r}", "re-sign with `patchkit sign`")
    logged = datetime.fromtimestamp(integrated_time, tz=UTC) if integrated_time else None
    key_pem = cert.public_key().public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    identity_name = next(n for n in claimed.identities if any(identity_matches(m.identity, n) for m in matched))
    return payload, KeylessSigner(identity_name, claimed.issuer or "", matched, key_pem, log_index, logged)


def _open_with_sigstore(data: bytes, cert: x509.Certificate, claimed: LeafIdentity, candidates: list[IdentityEntry],
                        who: str, source: str, cache: dict[str, Any]) -> tuple[bytes, KeylessSigner]:
    """sigstore-python's Verifier, for what the native path does not verify (RFC 3161 signed
    timestamps, Rekor v2 entries): the same acceptance, at the cost of importing it."""
    from sigstore.errors import Error as SigstoreError
    from sigstore.models import Bundle
    from sigstore.verify import Verifier

    try:
        bundle = Bundle.from_json(data)
    except (SigstoreError, ValueError) as exc:
        raise IntegrityError(f"{source}: the keyless bundle is malformed: {exc}", _HINT_RESIGN) from None
    matched: list[IdentityEntry] = []
    payload_type, payload = "", b""
    first: Exception | None = None
    for identity in candidates:
        try:
            verifier = Verifier(trusted_root=_trusted_root(identity, cache))
            payload_type, payload = verifier.verify_dsse(bundle, _Policy(identity))
        except (SigstoreError, ValueError) as exc:
            first = first or _classify(exc, who, source)
            continue
        matched.append(identity)
    if not matched:
        assert first is not None
        raise first
    entry = bundle.log_entry._inner
    return _signed(cert, claimed, matched, payload_type, payload, int(entry.log_index), entry.integrated_time, source)


# -- signing ------------------------------------------------------------------------------------


def ambient_github_token() -> str | None:
    """GitHub Actions' OIDC token for Sigstore (audience `sigstore`), through sigstore's `id` detection."""
    _sigstore("sign --keyless")
    from sigstore.oidc import IdentityError, detect_credential

    try:
        return detect_credential()
    except IdentityError as exc:
        raise UsageError(f"GitHub Actions did not give an identity token: {exc}",
                         "give the workflow `permissions: id-token: write`, or set SIGSTORE_ID_TOKEN") from None


def claimed_identity(material: dict[str, Any], source: str) -> LeafIdentity:
    """What a keyless bundle's leaf claims, unchecked (`publish --keyless` takes it as its own identity,
    then verifies the bundle against it)."""
    return leaf_identity(_load_leaf(material, source))


def leaf_identity_of_bundle(bundle: bytes) -> LeafIdentity:
    """Who a keyless bundle this process just wrote names (for `sign --keyless`'s report)."""
    doc = json.loads(bundle)
    return leaf_identity(_load_leaf(doc["verificationMaterial"], "the new signature"))


def sign_statement(payload: bytes, token: str) -> bytes:
    """A keyless bundle over `payload` from the public-good instance (Fulcio, Rekor): needs the network."""
    _sigstore("sign --keyless")
    from sigstore import dsse
    from sigstore.errors import Error as SigstoreError
    from sigstore.models import ClientTrustConfig
    from sigstore.oidc import IdentityError, IdentityToken
    from sigstore.sign import SigningContext

    try:
        identity = IdentityToken(token)
    except IdentityError as exc:
        raise UsageError(f"the ambient identity token is not usable: {exc}",
                         "set SIGSTORE_ID_TOKEN to a fresh OIDC token, or run in GitHub Actions with `id-token: write`") from None
    try:
        context = SigningContext.from_trust_config(ClientTrustConfig.production())
        with context.signer(identity) as signer:
            bundle = signer.sign_dsse(dsse.Statement(payload))
    except SigstoreError as exc:
        raise IntegrityError(f"keyless signing failed: {exc}", "check the network and the token, then retry") from None
    return (bundle.to_json() + "\n").encode()


@dataclass(frozen=True)
class SigningInstance:
    """The Sigstore instance keyless signing goes to: what turns a payload and a token into a bundle,
    and the trusted root that checks what it issues (None: the public-good instance).

    A publisher checks its own keyless signatures (the artifact's, the registry index's) against the
    instance it signs with, so the two always agree."""

    sign: Callable[[bytes, str], bytes]
    trusted_root: bytes | None = None
    name: str = PUBLIC_GOOD


def signing_instance() -> SigningInstance:
    """The one seam between patchkit and Fulcio/Rekor: every keyless signature (`sign --keyless`,
    `publish --keyless`, the index) is made through the instance this returns. Tests replace it with
    a stand-in instance, since Fulcio, Rekor and an identity provider cannot run offline."""
    return SigningInstance(sign_statement)


__all__ = [
    "PUBLIC_GOOD",
    "KeylessSigner",
    "SigningInstance",
    "ambient_github_token",
    "claimed_identity",
    "identity_matches",
    "is_keyless",
    "leaf_identity",
    "leaf_identity_of_bundle",
    "normalize_trusted_root",
    "open_keyless",
    "sign_statement",
    "signing_instance",
    "validate_identity",
    "validate_issuer",
]
