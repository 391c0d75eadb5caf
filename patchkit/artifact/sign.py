"""`patchkit sign`: validate an artifact, then sign every file in it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from patchkit import constants
from patchkit.manifest import parse_manifest
from patchkit.trust.bundles import read_artifact_files, sign_directory
from patchkit.trust.keys import keyid_of, load_private_key


def sign_artifact(directory: Path, key_path: Path, passphrase_env: str | None = None, *,
                  certificate_chain: Path | None = None) -> dict[str, Any]:
    """Refuse to sign anything `verify` would reject on content, so signatures vouch for valid patches.

    With `certificate_chain` (the leaf for `key_path` first, then intermediates), the signature
    uses model-signing's certificate method instead of a bare key.
    """
    from patchkit.artifact.verify import check_content

    directory = Path(directory)
    key = load_private_key(key_path, passphrase_env)
    chain = None
    if certificate_chain is not None:
        from patchkit.trust.certificates import signing_chain

        chain = signing_chain(certificate_chain, key)
    files = read_artifact_files(directory)
    from patchkit.errors import InvalidInputError

    if constants.MANIFEST_FILE not in files:
        raise InvalidInputError(f"{directory} has no {constants.MANIFEST_FILE}", "build it first with `patchkit build`")
    manifest = parse_manifest(files[constants.MANIFEST_FILE], source=str(directory / constants.MANIFEST_FILE))
    check_content(directory, manifest, files)
    sign_directory(directory, key, name=f"{manifest.name}@{manifest.version}", chain=chain)
    return {
        "name": manifest.name,
        "version": manifest.version,
        "keyid": keyid_of(key.public_key()),
        "signature": str(directory / constants.SIGNATURE_FILE),
        "method": "certificate" if chain else "key",
    }


def ambient_identity_token() -> str:
    """The OIDC token `sign --keyless` signs as: SIGSTORE_ID_TOKEN, else GitHub Actions' (when the job may
    request one). None is a UsageError (exit 2): keyless signing never opens a browser flow here."""
    from patchkit.errors import UsageError

    token = constants.sigstore_id_token()
    if token is None and constants.github_oidc_available():
        from patchkit.trust.keyless import ambient_github_token

        token = ambient_github_token()
    if token is None:
        raise UsageError("no ambient identity token for --keyless (SIGSTORE_ID_TOKEN is unset and this is not a GitHub "
                         "Actions job allowed to request one)",
                         "set SIGSTORE_ID_TOKEN, or give the workflow `permissions: id-token: write`; or sign with --key")
    return token


def sign_artifact_keyless(directory: Path, token: str | None = None) -> dict[str, Any]:
    """`sign --keyless`: the same content checks as `sign_artifact`, then a Sigstore bundle from Fulcio and Rekor
    (as the ambient identity, or `token`'s when `publish --keyless` already read it)."""
    from patchkit.artifact.verify import check_content
    from patchkit.errors import InvalidInputError
    from patchkit.trust.bundles import sign_directory_keyless
    from patchkit.trust.keyless import leaf_identity_of_bundle

    directory = Path(directory)
    files = read_artifact_files(directory)
    if constants.MANIFEST_FILE not in files:
        raise InvalidInputError(f"{directory} has no {constants.MANIFEST_FILE}", "build it first with `patchkit build`")
    manifest = parse_manifest(files[constants.MANIFEST_FILE], source=str(directory / constants.MANIFEST_FILE))
    check_content(directory, manifest, files)
    token = token if token is not None else ambient_identity_token()
    bundle = sign_directory_keyless(directory, token, name=f"{manifest.name}@{manifest.version}")
    who = leaf_identity_of_bundle(bundle)
    return {"name": manifest.name, "version": manifest.version, "identity": ", ".join(who.identities), "issuer": who.issuer,
            "signature": str(directory / constants.SIGNATURE_FILE), "method": "keyless"}
