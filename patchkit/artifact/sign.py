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
