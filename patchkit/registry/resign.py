"""`patchkit resign NS/NAME@VERSION --key NEW.pem`: the same files of a published version, a new signature.

After a rotation or a revocation, versions signed by the old key stop verifying (after the
handover, or at all). Re-signing gives such a version a signature by the current key without
changing a byte of its files: so its artifact digest, which the index and every lock name,
stays the same. The new signature is committed as a new commit, and the index, bumped,
lists that commit and the time of the new signature (`signed_at`).

The files are taken from the registry and checked against the index's digest and content
rules before anything is signed; the current index must verify against the key given (or a
key it succeeded, per the namespace's key log). Review what you re-sign: a key that leaked
may have published versions you did not.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from patchkit import constants
from patchkit._internal.clock import utc_stamp
from patchkit._internal.records import Record
from patchkit.errors import IntegrityError, MixAndMatchError, NotFoundError
from patchkit.keys import keyid_of, load_private_key, public_pem
from patchkit.manifest import parse_manifest, validate_name
from patchkit.registry.backends import open_registry
from patchkit.registry.cache import MAX_ARTIFACT_BYTES
from patchkit.registry.client import (
    _check_expiry_days,
    _current_index,
    _entry_for,
    _exact_version,
    _write_index,
    signer_chain,
)
from patchkit.registry.index import DEFAULT_EXPIRES_DAYS
from patchkit.signing import check_files, open_bundle, root_digest, sign_digests
from patchkit.trust import TrustEntry, TrustStore


@dataclass(frozen=True)
class ResignResult(Record):
    """A version's new signature: the same `digest`, a new `commit` that replaces `previous_commit`."""

    name: str
    version: str
    digest: str
    commit: str
    previous_commit: str
    keyid: str
    registry: str
    index_version: int
    expires: str
    signed_at: str


def resign(ref: str, key_path: Path, *, registry: str | None = None, passphrase_env: str | None = None,
           expires_days: int = DEFAULT_EXPIRES_DAYS, certificate_chain: Path | None = None) -> ResignResult:
    version = _exact_version(ref, "resign")
    _check_expiry_days(expires_days)
    name = validate_name(ref.partition("@")[0])
    key = load_private_key(key_path, passphrase_env)
    chain = signer_chain(key, certificate_chain)
    reg = open_registry(registry)
    with reg.writer_lock(name):
        index, head = _current_index(reg, name, key, allow_missing=False)
        entry = _entry_for(index, version)
        if not entry.files:
            raise NotFoundError(f"{name}@{entry.version}: the index lists no files", "nothing was changed")
        if entry.total_size > MAX_ARTIFACT_BYTES:
            raise IntegrityError(f"{name}@{entry.version}: the index states {entry.total_size} bytes, over the artifact limit",
                                 "this is not a patch; refusing it")
        files: dict[str, bytes] = {}
        for fname, size in sorted(entry.files.items()):
            data = reg.read(name, entry.commit, fname, size)
            if data is None or len(data) != size:
                raise IntegrityError(f"{reg.url} {name}@{entry.version}: {fname} is missing or not the size the index states",
                                     "the registry is damaged or tampered with; nothing was changed")
            files[fname] = data
        content = {f: b for f, b in files.items() if f != constants.SIGNATURE_FILE}
        resources = {f: hashlib.sha256(b).hexdigest() for f, b in content.items()}
        if f"sha256:{root_digest(resources)}" != entry.digest:
            raise MixAndMatchError(f"{reg.url} {name}@{entry.version}: the files at commit {entry.commit[:12]} are not the "
                                   f"artifact the index lists ({entry.digest})", "the registry is tampered with; nothing was changed")
        manifest = parse_manifest(content.get(constants.MANIFEST_FILE, b""), source=f"{name}@{entry.version} manifest")
        if (manifest.name, manifest.version) != (name, entry.version):
            raise MixAndMatchError(f"{name}@{entry.version}: its manifest names {manifest.name}@{manifest.version}",
                                   "the registry is tampered with; nothing was changed")
        sig = sign_digests(f"{name}@{entry.version}", resources, key, [constants.SIGNATURE_FILE], chain=chain)
        pub = key.public_key()
        own = TrustStore(None, [TrustEntry(keyid_of(pub), public_pem(pub).decode(), [name])])
        statement, _ = open_bundle(sig, own, source="the new signature")
        check_files(statement, content, where="the new signature")
        files[constants.SIGNATURE_FILE] = sig
        commit = reg.commit(name, files, f"{name} {entry.version}: re-signed", parent=head)
        new = index.next(expires_days=expires_days)
        e = new.versions[entry.version]
        previous = e.commit
        e.commit, e.signed_at = commit, utc_stamp()
        e.files[constants.SIGNATURE_FILE] = len(sig)
        _write_index(reg, name, new, key, commit, f"index {new.index_version}: resign {entry.version}", chain=chain)
    return ResignResult(name, entry.version, entry.digest, commit, previous, keyid_of(key.public_key()), reg.url,
                        new.index_version, new.expires, e.signed_at)


__all__ = ["ResignResult", "resign"]
