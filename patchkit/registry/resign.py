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
from patchkit.errors import IntegrityError, MixAndMatchError, NotFoundError, UsageError
from patchkit.manifest import parse_manifest, validate_name
from patchkit.registry.backends import open_registry
from patchkit.registry.base import Registry
from patchkit.registry.cache import MAX_ARTIFACT_BYTES
from patchkit.registry.client import (
    _check_expiry_days,
    _current_index,
    _entry_for,
    _exact_version,
    _write_index,
    signer_chain,
)
from patchkit.registry.index import DEFAULT_EXPIRES_DAYS, IndexEntry
from patchkit.trust.bundles import MAX_SIGNATURE_BYTES, check_files, open_bundle, root_digest, sign_digests
from patchkit.trust.keys import PrivateKey, keyid_of, load_private_key, public_pem
from patchkit.trust.store import TrustEntry, TrustStore


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


def resign_files(reg: Registry, name: str, entry: IndexEntry, key: PrivateKey, chain: list[bytes] | None) -> dict[str, bytes]:
    """The files of `entry` at its commit, checked against its digest and manifest, with a new
    signature by `key`: what a re-signed version's commit holds (not a byte of content changes)."""
    if not entry.files and entry.commit:
        entry = IndexEntry(**{**vars(entry), "files": _listed_sizes(reg, name, entry.commit)})
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
    return {**content, constants.SIGNATURE_FILE: sig}


def _listed_sizes(reg: Registry, name: str, commit: str) -> dict[str, int]:
    """A vouched version's files, when only its commit is known: the files its signature lists."""
    sig = reg.read(name, commit, constants.SIGNATURE_FILE, MAX_SIGNATURE_BYTES)
    if sig is None:
        raise NotFoundError(f"{name}: commit {commit[:12]} holds no signature", "nothing was changed")
    import json

    try:
        payload = json.loads(sig)["dsseEnvelope"]["payload"]
        import base64

        statement = json.loads(base64.b64decode(payload))
        names = [str(r["name"]) for r in statement["predicate"]["resources"]]
    except (ValueError, KeyError, TypeError):
        raise IntegrityError(f"{name}: the signature at commit {commit[:12]} is unreadable", "nothing was changed") from None
    sizes: dict[str, int] = {}
    for fname in [*names, constants.SIGNATURE_FILE]:
        data = reg.read(name, commit, fname, MAX_ARTIFACT_BYTES)
        if data is None:
            raise NotFoundError(f"{name}: commit {commit[:12]} lacks {fname}", "nothing was changed")
        sizes[fname] = len(data)
    return sizes


def _vouched(reg: Registry, name: str, entry: IndexEntry, digest: str | None) -> None:
    """Re-sign only what the vendor published: the registry's word (its index) may be a thief's.

    The digest must match this machine's record of what it published (`patchkit.registry.ledger`)
    or the one given with --digest; for a namespace with a root of trust, one of them is required.
    """
    from patchkit.registry import ledger
    from patchkit.registry.rooted import has_root

    rec = ledger.published(reg.ident, name).get(entry.version)
    expected = digest or (rec.digest if rec else None)
    if expected is not None and expected != entry.digest:
        raise MixAndMatchError(
            f"{name}@{entry.version}: the registry's index lists {entry.digest}, but "
            + ("--digest says" if digest else "this machine published") + f" {expected}",
            "the registry's files were replaced (a leaked key can do that); nothing was signed. Recover with "
            "`patchkit root rotate-key … --compromised-since TIME`, which restores what you published")
    if expected is None and has_root(reg, name.split("/", 1)[0]):
        raise UsageError(f"{name}@{entry.version}: this machine has no record of publishing it, and its namespace has a "
                         "root of trust", "give the digest you published with --digest sha256:… (from your release records)")


def resign(ref: str, key_path: Path, *, registry: str | None = None, passphrase_env: str | None = None,
           expires_days: int = DEFAULT_EXPIRES_DAYS, certificate_chain: Path | None = None,
           digest: str | None = None) -> ResignResult:
    from patchkit.registry import ledger

    version = _exact_version(ref, "resign")
    _check_expiry_days(expires_days)
    name = validate_name(ref.partition("@")[0])
    key = load_private_key(key_path, passphrase_env)
    chain = signer_chain(key, certificate_chain)
    reg = open_registry(registry)
    with reg.writer_lock(name):
        index, head = _current_index(reg, name, key, allow_missing=False)
        entry = _entry_for(index, version)
        _vouched(reg, name, entry, digest)
        files = resign_files(reg, name, entry, key, chain)
        sig = files[constants.SIGNATURE_FILE]
        commit = reg.commit(name, files, f"{name} {entry.version}: re-signed", parent=head)
        new = index.next(expires_days=expires_days)
        e = new.versions[entry.version]
        previous = e.commit
        e.commit, e.signed_at = commit, utc_stamp()
        e.files[constants.SIGNATURE_FILE] = len(sig)
        ledger.record(reg.ident, name, entry.version, entry.digest, commit)
        _write_index(reg, name, new, key, commit, f"index {new.index_version}: resign {entry.version}", chain=chain)
    return ResignResult(name, entry.version, entry.digest, commit, previous, keyid_of(key.public_key()), reg.url,
                        new.index_version, new.expires, e.signed_at)


__all__ = ["ResignResult", "resign", "resign_files"]
