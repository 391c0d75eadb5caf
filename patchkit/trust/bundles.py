"""Signatures in the OpenSSF model-signing format, written with `cryptography` directly.

A signature is a Sigstore bundle (v0.3) holding a DSSE envelope whose payload is an in-toto
Statement v1 with predicate type `https://model_signing/signature/v1.0`: the resources are the
per-file sha256s, the subject digest is sha256 over those digests in name order. Any
`model_signing verify key` accepts it. Importing model-signing itself would cost most of a
second of start-up on the verify path, hence this small re-implementation of the format.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from patchkit import constants
from patchkit._internal.files import atomic_write_bytes, is_real_dir, read_regular
from patchkit._internal.jsonio import Malformed, expect_list, loads_strict, require
from patchkit.errors import IntegrityError, InvalidInputError, PatchkitError
from patchkit.manifest import validate_name
from patchkit.trust.keyless import is_keyless
from patchkit.trust.keys import PrivateKey, PublicKey, keyid_of
from patchkit.trust.store import TrustEntry, TrustStore

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
# Bundles are small JSON; anything larger is refused before parsing.
MAX_SIGNATURE_BYTES = 4 * 1024 * 1024
MAX_SIGNED_FILE_BYTES = 512 * 1024 * 1024
MAX_ARTIFACT_FILES = 64


@dataclass(frozen=True)
class Statement:
    """The decoded, signature-checked content of a bundle."""

    subject_name: str
    root_digest: str  # hex sha256 over the per-file digests, in name order
    resources: dict[str, str]  # file name -> hex sha256
    keyid: str


@dataclass(frozen=True)
class Signed:
    keyid: str
    signer: str
    root_digest: str
    entry: TrustEntry


def pae(payload: bytes, payload_type: str = PAYLOAD_TYPE) -> bytes:
    """DSSE v1 pre-authentication encoding."""
    return b"DSSEv1 %d %s %d " % (len(payload_type), payload_type.encode(), len(payload)) + payload


def root_digest(resources: Mapping[str, str]) -> str:
    h = hashlib.sha256()
    for name in sorted(resources):
        h.update(bytes.fromhex(resources[name]))
    return h.hexdigest()


def _statement(name: str, resources: Mapping[str, str], ignore: list[str]) -> bytes:
    body = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": name, "digest": {"sha256": root_digest(resources)}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "serialization": {"method": "files", "hash_type": "sha256", "allow_symlinks": False, "ignore_paths": ignore},
            "resources": [{"name": n, "algorithm": "sha256", "digest": resources[n]} for n in sorted(resources)],
        },
    }
    return json.dumps(body, indent=2, sort_keys=False).encode("utf-8")


def sign_digests(name: str, resources: Mapping[str, str], key: PrivateKey, ignore: list[str], *,
                 chain: list[bytes] | None = None) -> bytes:
    """A bundle over precomputed file digests; with `chain` (DER, leaf first), in the certificate method."""
    payload = _statement(name, resources, ignore)
    sig = key.sign(pae(payload), ec.ECDSA(hashes.SHA256()))
    if chain:
        from patchkit.trust.certificates import chain_material

        material = chain_material(chain)
    else:
        material = {"publicKey": {"hint": keyid_of(key.public_key())}, "tlogEntries": []}
    bundle = {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": material,
        "dsseEnvelope": {
            "payload": base64.b64encode(payload).decode(),
            "payloadType": PAYLOAD_TYPE,
            "signatures": [{"sig": base64.b64encode(sig).decode(), "keyid": ""}],
        },
    }
    return (json.dumps(bundle, separators=(",", ":")) + "\n").encode("utf-8")


def sign_blobs(name: str, files: Mapping[str, bytes], key: PrivateKey, *, sig_name: str = constants.INDEX_SIG_FILE,
               chain: list[bytes] | None = None) -> bytes:
    """Sign in-memory files (the registry index) in the same format."""
    return sign_digests(name, {n: hashlib.sha256(b).hexdigest() for n, b in files.items()}, key, [sig_name], chain=chain)


def read_artifact_files(directory: Path, *, exclude: tuple[str, ...] = (constants.SIGNATURE_FILE,)) -> dict[str, bytes]:
    """Every regular file directly in `directory`, each read to a bound.

    Symlinks, sub-directories, FIFOs and device files are refused by type (from lstat, then
    again on the opened descriptor), so none of them can hang or redirect a verification.
    """
    directory = Path(directory)
    if not is_real_dir(directory):
        raise InvalidInputError(f"{directory} is not a directory", "pass a patch artifact directory")
    names = sorted(os.listdir(directory))
    if len(names) > MAX_ARTIFACT_FILES:
        raise IntegrityError(f"{directory} holds {len(names)} entries; an artifact holds a handful of files",
                             "this is not a patch artifact")
    out: dict[str, bytes] = {}
    total = 0
    for name in names:
        if name in exclude:
            continue
        p = directory / name
        mode = os.lstat(p).st_mode
        if stat.S_ISLNK(mode):
            raise IntegrityError(f"{name} in {directory} is a symlink", "artifacts hold plain files only")
        if stat.S_ISDIR(mode):
            raise IntegrityError(f"unexpected directory {name}/ in {directory}", "artifacts hold plain files only; remove it")
        if not stat.S_ISREG(mode):
            raise IntegrityError(f"{name} in {directory} is not a regular file (a FIFO, socket or device)",
                                 "artifacts hold plain files only; remove it")
        data = read_regular(p, MAX_SIGNED_FILE_BYTES, what=f"{name} in {directory}", error=IntegrityError)
        total += len(data)
        if total > MAX_SIGNED_FILE_BYTES:
            raise IntegrityError(f"{directory} holds more than {MAX_SIGNED_FILE_BYTES} bytes", "this is not a patch artifact")
        out[name] = data
    return out


def sign_directory(directory: Path, key: PrivateKey, *, name: str | None = None, chain: list[bytes] | None = None) -> bytes:
    """Sign every file of an artifact directory and write `patchkit.sig` atomically."""
    files = read_artifact_files(directory)
    bundle = sign_digests(
        name or Path(directory).name,
        {n: hashlib.sha256(b).hexdigest() for n, b in files.items()},
        key,
        [constants.SIGNATURE_FILE],
        chain=chain,
    )
    atomic_write_bytes(Path(directory) / constants.SIGNATURE_FILE, bundle)
    return bundle


def sign_statement_keyless(payload: bytes, token: str) -> bytes:
    """A keyless bundle over an in-toto statement, from the Sigstore instance `signing_instance()` names."""
    from patchkit.trust.keyless import signing_instance

    return signing_instance().sign(payload, token)


def sign_blobs_keyless(name: str, files: Mapping[str, bytes], token: str, *,
                       sig_name: str = constants.INDEX_SIG_FILE) -> bytes:
    """Sign in-memory files (the registry index) keyless, in the same statement format as `sign_blobs`."""
    payload = _statement(name, {n: hashlib.sha256(b).hexdigest() for n, b in files.items()}, [sig_name])
    return sign_statement_keyless(payload, token)


def sign_directory_keyless(directory: Path, token: str, *, name: str) -> bytes:
    """Sign every file of an artifact directory keyless (Fulcio, Rekor) and write `patchkit.sig` atomically."""
    files = read_artifact_files(directory)
    payload = _statement(name, {n: hashlib.sha256(b).hexdigest() for n, b in files.items()}, [constants.SIGNATURE_FILE])
    bundle = sign_statement_keyless(payload, token)
    atomic_write_bytes(Path(directory) / constants.SIGNATURE_FILE, bundle)
    return bundle


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise IntegrityError(f"signature bundle: {what} is missing", "the signature is corrupt; re-sign the patch")
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        raise IntegrityError(f"signature bundle: {what} is not valid base64", "the signature is corrupt; re-sign the patch") from None


def open_bundle(data: bytes, trust: TrustStore, *, source: str) -> tuple[Statement, TrustEntry]:
    """Check a bundle's signature against the trusted key it names; return its statement.

    The key is named by a public-key hint, or by a certificate chain whose leaf a trusted CA
    issued (or whose leaf key is trusted itself). An unknown key is a trust failure (exit 4);
    a bad signature or malformed bundle is an integrity failure (exit 3).
    """
    if len(data) > MAX_SIGNATURE_BYTES:
        raise IntegrityError(f"{source} is larger than a signature can be", "the signature is corrupt")
    try:
        bundle = loads_strict(data, what=source)
    except InvalidInputError as exc:
        raise IntegrityError(f"{source} is corrupt: {exc.message}", "re-sign the patch") from None
    if not isinstance(bundle, dict) or bundle.get("mediaType") != BUNDLE_MEDIA_TYPE:
        raise IntegrityError(f"{source} is not a Sigstore bundle v0.3", "re-sign with `patchkit sign`")
    chain: list[bytes] | None = None
    try:
        material = require(bundle, "verificationMaterial")
        if is_keyless(material):
            return _open_keyless(data, bundle, material, trust, source)
        if isinstance(material, dict) and "x509CertificateChain" in material:
            from patchkit.trust.certificates import parse_material

            chain = parse_material(material, source)
            keyid = ""
        else:
            keyid = require(require(material, "publicKey"), "hint")
        env = require(bundle, "dsseEnvelope")
        sigs = require(env, "signatures")
    except Malformed:
        raise IntegrityError(f"{source} lacks a public-key hint or DSSE envelope", "re-sign with `patchkit sign`") from None
    if not isinstance(keyid, str) or not isinstance(sigs, list) or len(sigs) != 1 or not isinstance(sigs[0], dict):
        raise IntegrityError(f"{source} must hold exactly one signature and a key hint", "re-sign with `patchkit sign`")
    if env.get("payloadType") != PAYLOAD_TYPE:
        raise IntegrityError(f"{source}: unexpected DSSE payload type {env.get('payloadType')!r}", "re-sign with `patchkit sign`")
    payload = _b64(env.get("payload"), "payload")
    sig = _b64(sigs[0].get("sig"), "signature")
    key: PublicKey
    if chain is not None:
        from patchkit.trust.certificates import leaf_public_key

        key = leaf_public_key(chain, source)
        keyid = keyid_of(key)
        entry = trust.find(keyid)  # a leaf key trusted as such (the publisher's own check) needs no CA
    else:
        entry = trust.find(keyid)
        if entry is None:
            raise trust.unknown_signer(keyid, _claimed_name(payload, keyid, source), f"{source} was signed by key {keyid[:16]}…")
        key = entry.public_key()
    try:
        key.verify(sig, pae(payload), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise IntegrityError(f"{source}: the signature does not match its content", "the patch or its signature was altered; do not use it") from None
    statement = _parse_statement(payload, keyid, source)
    if entry is None:
        assert chain is not None
        entry = trust.certificate_entry(chain, at=trust.signing_time(f"sha256:{statement.root_digest}"))
    return statement, entry


def _open_keyless(data: bytes, bundle: dict[str, Any], material: dict[str, Any], trust: TrustStore,
                  source: str) -> tuple[Statement, TrustEntry]:
    """A keyless bundle: the identity entries that name its leaf, then sigstore's verification of the
    chain, the log entry and the signature (`patchkit.trust.keyless`); then the same statement checks."""
    from patchkit.trust.keyless import open_keyless

    env = bundle.get("dsseEnvelope")
    if not isinstance(env, dict) or env.get("payloadType") != PAYLOAD_TYPE:
        raise IntegrityError(f"{source}: a keyless bundle must hold a DSSE envelope of type {PAYLOAD_TYPE}",
                             "re-sign with `patchkit sign --keyless`")
    payload, signer = open_keyless(data, material, trust.identities, source=source, where=str(trust.path),
                                   cache=trust.keyless_roots)
    entry = trust.keyless_entry(signer)
    return _parse_statement(payload, entry.keyid, source), entry


def _claimed_name(payload: bytes, keyid: str, source: str) -> str | None:
    """The patch name an unverified statement claims (an artifact's subject is NAME@VERSION, an
    index's NAME), only to word the error about its unknown signer."""
    try:
        name = _parse_statement(payload, keyid, source).subject_name.partition("@")[0]
        return validate_name(name)
    except PatchkitError:
        return None


def _parse_statement(payload: bytes, keyid: str, source: str) -> Statement:
    try:
        st = loads_strict(payload, what=f"{source} payload")
        if require(st, "_type") != STATEMENT_TYPE or require(st, "predicateType") != PREDICATE_TYPE:
            raise IntegrityError(f"{source}: not a model-signing v1.0 statement", "re-sign with `patchkit sign`")
        (subject,) = expect_list(require(st, "subject"), "subject", min_len=1, max_len=1)
        name = str(require(subject, "name"))
        root = str(require(require(subject, "digest"), "sha256"))
        resources: dict[str, str] = {}
        listed = require(require(st, "predicate"), "resources")
        if not isinstance(listed, list | dict | str):  # an empty object or string lists no file, as before
            raise Malformed("resources is not a list")
        for r in listed:
            algorithm = require(r, "algorithm")
            if algorithm != "sha256":
                raise IntegrityError(f"{source}: unsupported digest algorithm {algorithm!r}", "re-sign with `patchkit sign`")
            file = require(r, "name")
            if isinstance(file, list | dict):
                raise Malformed("a resource name is not a scalar")
            if file in resources:
                raise IntegrityError(f"{source}: file {file!r} listed twice", "re-sign with `patchkit sign`")
            resources[str(file)] = str(require(r, "digest"))
    except (Malformed, InvalidInputError):
        raise IntegrityError(f"{source}: malformed in-toto statement", "re-sign with `patchkit sign`") from None
    if root_digest(resources) != root:
        raise IntegrityError(f"{source}: the root digest does not match the listed files", "the signature is corrupt")
    return Statement(name, root, resources, keyid)


def check_files(statement: Statement, files: Mapping[str, bytes], *, where: str) -> None:
    """Exact file set and digests: no extra file, no missing file, no changed byte."""
    extra = sorted(set(files) - set(statement.resources))
    missing = sorted(set(statement.resources) - set(files))
    if extra:
        raise IntegrityError(f"{where}: unsigned extra file(s): {', '.join(extra)}", "remove them, or re-sign if they belong")
    if missing:
        raise IntegrityError(f"{where}: signed file(s) missing: {', '.join(missing)}", "re-download the patch")
    for name in sorted(files):
        if hashlib.sha256(files[name]).hexdigest() != statement.resources[name]:
            raise IntegrityError(f"{where}: {name} does not match its signed digest", "the file was modified; re-download the patch")


def verify_blobs(sig: bytes, files: Mapping[str, bytes], trust: TrustStore, name: str, *, source: str = constants.INDEX_SIG_FILE,
                 dated: Callable[[Mapping[str, bytes]], datetime | None] | None = None) -> Signed:
    """Verify in-memory files (e.g. the registry index) signed for patch `name`.

    `dated` reads the time the signed files themselves state (an index's `updated_at`): a
    retired key's signature is judged by it, a revoked key's never.
    """
    statement, entry = open_bundle(sig, trust, source=source)
    check_files(statement, files, where=source)
    when = dated(files) if dated is not None else None
    trust.authorize(statement.keyid, name, entry=entry, signed_at=when, dated_by_signer=dated is not None)
    return Signed(statement.keyid, entry.display, statement.root_digest, entry)
