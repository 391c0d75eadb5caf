"""A namespace's TUF metadata: how patchkit lays it out, builds it, signs it and checks it (no IO).

Roles (python-tuf's `tuf.api.metadata`, consistent snapshots):
- **root**: the offline root keys (k of n). It names the keys of the other top-level roles, and a
  new root version needs the threshold of the old root *and* of the new one.
- **targets**: the same offline keys. It lists no files; it only delegates, to the role `online`,
  which names the online signing keys. So only the root key holders can add, replace or drop an
  online key: a thief holding an online key cannot rotate it to a key of their own.
- **online** (delegated, paths `*/index.json`): lists one target per patch name, `NAME/index.json`,
  the name's signed index with its length and sha256, and the registry commit that holds it
  (`custom`). The index keeps what TUF lacks: versions, yanks, the digest-chained history; each
  artifact is still verified by its own model-signing bundle, now against the keys of `online`.
- **snapshot** and **timestamp**: online keys, short expiry. Every metadata file they list carries
  its hashes, so a second, different file with a version already seen is caught (ngclient keeps
  the first one it trusted), and every write bumps every version it changes.

`*` in a TUF path pattern matches one path segment, so `*/index.json` covers exactly the names of
one namespace (the namespace is the repository the metadata lives in, not part of the path).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from securesystemslib.signer import CryptoSigner, Key, SSlibKey
from tuf.api.exceptions import RepositoryError, UnsignedMetadataError
from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)

from patchkit._internal.clock import now_utc
from patchkit.errors import IntegrityError, InvalidInputError, TrustError
from patchkit.trust.keys import PrivateKey, PublicKey, keyid_of

ONLINE = "online"
TOP_ROLES = ("root", "targets", "snapshot", "timestamp")
INDEX_PATTERN = "*/index.json"
EXTENSION = "x-patchkit"  # root's own field: which namespace this root is for
MAX_ROOT_VERSIONS = 256
# Caps on what a client downloads (and what a publisher writes): each file is linear in the number of
# names, and a namespace has at most MAX_NAMES of them in its metadata.
MAX_NAMES = 2000
MAX_ROOT_BYTES = 256 * 1024
MAX_TIMESTAMP_BYTES = 16 * 1024
MAX_SNAPSHOT_BYTES = 64 * 1024
MAX_TARGETS_BYTES = 1024 * 1024
DEFAULT_ROOT_DAYS = 365
KEEP_VERSIONS = 2  # older versions of snapshot/targets/online files are dropped from the registry


def tuf_key(key: PublicKey) -> SSlibKey:
    return SSlibKey.from_crypto(key, scheme="ecdsa-sha2-nistp256")


def public_of(key: Key, where: str) -> PublicKey:
    """The P-256 key behind a TUF key entry (patchkit verifies artifacts with it)."""
    pem = key.keyval.get("public") if isinstance(key.keyval, dict) else None
    if key.keytype != "ecdsa" or not isinstance(pem, str):
        raise TrustError(f"{where}: key {key.keyid[:16]}… is a {key.keytype} key", "patchkit signs with ECDSA P-256 keys")
    try:
        pub = serialization.load_pem_public_key(pem.encode())
    except ValueError:
        raise IntegrityError(f"{where}: key {key.keyid[:16]}… is not a readable public key", "the metadata is damaged") from None
    if not isinstance(pub, ec.EllipticCurvePublicKey) or not isinstance(pub.curve, ec.SECP256R1):
        raise TrustError(f"{where}: key {key.keyid[:16]}… is not a P-256 key", "patchkit signs with ECDSA P-256 keys")
    return pub


def signer(key: PrivateKey) -> CryptoSigner:
    return CryptoSigner(key, tuf_key(key.public_key()))


def index_target(name: str) -> str:
    """The target path of a name's index: `NAME/index.json` (one segment, as `*/index.json` needs)."""
    return f"{name.split('/', 1)[1]}/index.json"


def expiry(days: float) -> datetime:
    return now_utc() + timedelta(days=days)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def metafile(md: Metadata[Any]) -> MetaFile:
    data = md.to_bytes()
    return MetaFile(version=md.signed.version, length=len(data), hashes={"sha256": _sha256(data)})


@dataclass
class Repo:
    """One consistent view of a namespace's metadata, as a publisher changes and re-signs it.

    `changed` names the roles whose new versions must be written; `sign` signs them, snapshot and
    timestamp last, in the order TUF needs (each lists the hashes of what it names).
    """

    namespace: str
    root: Metadata[Root]
    targets: Metadata[Targets]
    online: Metadata[Targets]
    snapshot: Metadata[Snapshot]
    timestamp: Metadata[Timestamp]
    changed: set[str] = field(default_factory=set)
    fresh: bool = False  # built by `new_repo`: every role is at version 1 already

    # -- what the roles say ---------------------------------------------------------------
    def keys_of(self, role: str) -> list[PublicKey]:
        where = f"the root of trust of {self.namespace}"
        if role == ONLINE:
            delegations = self.targets.signed.delegations
            assert delegations is not None and delegations.roles is not None
            return [public_of(delegations.keys[k], where) for k in delegations.roles[ONLINE].keyids]
        return [public_of(self.root.signed.get_key(k), where) for k in self.root.signed.roles[role].keyids]

    def keyids_of(self, role: str) -> list[str]:
        """patchkit key ids (sha256 of the public PEM) of a role's keys."""
        return [keyid_of(k) for k in self.keys_of(role)]

    def entries(self) -> dict[str, TargetFile]:
        return dict(self.online.signed.targets)

    # -- changes --------------------------------------------------------------------------
    def list_index(self, name: str, data: bytes, commit: str, index_version: int) -> None:
        path = index_target(name)
        if path not in self.online.signed.targets and len(self.online.signed.targets) >= MAX_NAMES:
            raise InvalidInputError(f"{self.namespace} already lists {MAX_NAMES} names", "use another namespace")
        tf = TargetFile.from_data(path, data, ["sha256"])
        tf.unrecognized_fields = {"custom": {"commit": commit, "index_version": index_version}}
        self.online.signed.targets[path] = tf
        self.changed.add(ONLINE)

    def set_online_keys(self, keys: Iterable[PublicKey]) -> None:
        """Replace the online keys: the delegation to `online` and the snapshot and timestamp roles."""
        new = [tuf_key(k) for k in keys]
        delegations = self.targets.signed.delegations
        assert delegations is not None and delegations.roles is not None
        role = delegations.roles[ONLINE]
        for kid in list(role.keyids):
            self.targets.signed.revoke_key(kid, ONLINE)
        for k in new:
            self.targets.signed.add_key(k, ONLINE)
        for top in ("snapshot", "timestamp"):
            for kid in list(self.root.signed.roles[top].keyids):
                self.root.signed.revoke_key(kid, top)
            for k in new:
                self.root.signed.add_key(k, top)
        self.changed |= {"root", "targets", ONLINE}

    def set_root_keys(self, keys: Iterable[PublicKey], threshold: int) -> None:
        new = [tuf_key(k) for k in keys]
        if threshold < 1 or threshold > len(new):
            raise InvalidInputError(f"threshold {threshold} is not between 1 and {len(new)}", "give enough --new-root-key")
        for top in ("root", "targets"):
            for kid in list(self.root.signed.roles[top].keyids):
                self.root.signed.revoke_key(kid, top)
            for k in new:
                self.root.signed.add_key(k, top)
            self.root.signed.roles[top].threshold = threshold
        self.changed |= {"root", "targets"}

    # -- signing --------------------------------------------------------------------------
    def sign(self, *, online: Sequence[PrivateKey], offline: Sequence[PrivateKey] = (), old_root: Sequence[PrivateKey] = (),
             online_days: float, offline_days: float = DEFAULT_ROOT_DAYS) -> None:
        """Bump and sign every changed role, then snapshot and timestamp (always)."""
        step = 0 if self.fresh else 1
        self.fresh = False
        if "root" in self.changed:
            self.root.signed.version += step
            self.root.signed.expires = expiry(offline_days)
            self.root.signatures.clear()
            for k in [*old_root, *offline]:
                self.root.sign(signer(k), append=True)
        if "targets" in self.changed:
            self.targets.signed.version += step
            self.targets.signed.expires = expiry(offline_days)
            self.targets.signatures.clear()
            for k in offline:
                self.targets.sign(signer(k), append=True)
        if ONLINE in self.changed:
            self.online.signed.version += step
            self.online.signed.expires = expiry(online_days)
            self._sign_online(self.online, online)
        self.snapshot.signed.version += step
        self.snapshot.signed.expires = expiry(online_days)
        self.snapshot.signed.meta["targets.json"] = metafile(self.targets)
        self.snapshot.signed.meta[f"{ONLINE}.json"] = metafile(self.online)
        self._sign_online(self.snapshot, online)
        self.timestamp.signed.version += step
        self.timestamp.signed.expires = expiry(online_days)
        self.timestamp.signed.snapshot_meta = metafile(self.snapshot)
        self._sign_online(self.timestamp, online)
        self.changed |= {"snapshot", "timestamp"}

    @staticmethod
    def _sign_online(md: Metadata[Any], keys: Sequence[PrivateKey]) -> None:
        md.signatures.clear()
        for k in keys:
            md.sign(signer(k), append=True)

    def files(self) -> dict[str, bytes]:
        """The files to commit: every changed role under its consistent-snapshot name, and `timestamp.json`."""
        out: dict[str, bytes] = {}
        for role, md in (("root", self.root), ("targets", self.targets), (ONLINE, self.online), ("snapshot", self.snapshot)):
            if role in self.changed:
                out[f"{md.signed.version}.{role}.json"] = md.to_bytes()
        out["timestamp.json"] = self.timestamp.to_bytes()
        return out

    def stale(self) -> list[str]:
        """Files a client no longer needs once this change is written: the version of snapshot, targets
        or online KEEP_VERSIONS behind the one written now (each written once, so each exists; every
        root version stays: clients walk the chain from theirs)."""
        out = []
        for role, m in (("targets", self.targets), (ONLINE, self.online), ("snapshot", self.snapshot)):
            old = m.signed.version - KEEP_VERSIONS
            if role in self.changed and old >= 1:
                out.append(f"{old}.{role}.json")
        return out


def new_repo(namespace: str, root_keys: list[PublicKey], threshold: int, online_keys: list[PublicKey]) -> Repo:
    """Version 1 of every role, unsigned: root and targets offline, the rest online."""
    if threshold < 1 or threshold > len(root_keys):
        raise InvalidInputError(f"--threshold {threshold} is not between 1 and the {len(root_keys)} root keys",
                                "give as many --root-key as the threshold needs")
    root = Root(version=1, expires=expiry(DEFAULT_ROOT_DAYS), consistent_snapshot=True,
                unrecognized_fields={EXTENSION: {"namespace": namespace}})
    for k in root_keys:
        for top in ("root", "targets"):
            root.add_key(tuf_key(k), top)
    for top in ("root", "targets"):
        root.roles[top].threshold = threshold
    for k in online_keys:
        for top in ("snapshot", "timestamp"):
            root.add_key(tuf_key(k), top)
    delegations = Delegations(keys={}, roles={ONLINE: DelegatedRole(ONLINE, [], 1, True, [INDEX_PATTERN])})
    targets = Targets(version=1, expires=expiry(DEFAULT_ROOT_DAYS), delegations=delegations)
    for k in online_keys:
        targets.add_key(tuf_key(k), ONLINE)
    online = Targets(version=1, expires=expiry(1))
    snapshot = Snapshot(version=1, expires=expiry(1))
    timestamp = Timestamp(version=1, expires=expiry(1), snapshot_meta=MetaFile(version=1))
    return Repo(namespace, Metadata(root), Metadata(targets), Metadata(online), Metadata(snapshot), Metadata(timestamp),
                changed={"root", "targets", ONLINE}, fresh=True)


# -- reading a repository back (publisher side: verified, expiry not judged) --------------------


def _parse(data: bytes, want: type[Any], where: str) -> Metadata[Any]:
    try:
        md = Metadata[Any].from_bytes(data)
    except Exception:  # securesystemslib/tuf raise several types for bad input; all mean "not metadata"
        raise IntegrityError(f"{where} is not TUF metadata", "the registry's root-of-trust metadata is damaged") from None
    if not isinstance(md.signed, want):
        raise IntegrityError(f"{where} is {md.signed.type} metadata, not {want.type}", "the registry's metadata is damaged")
    return md


def _check(delegator: Root | Targets, role: str, md: Metadata[Any], where: str) -> None:
    try:
        delegator.verify_delegate(role, md.signed_bytes, md.signatures)
    except UnsignedMetadataError:
        raise TrustError(f"{where} is not signed by the threshold of keys the root of trust gives the {role} role",
                         "it was written by someone without those keys; restore the registry's metadata") from None


def namespace_of(root: Metadata[Root], where: str) -> str:
    ext = root.signed.unrecognized_fields.get(EXTENSION)
    ns = ext.get("namespace") if isinstance(ext, dict) else None
    if not isinstance(ns, str) or not ns:
        raise InvalidInputError(f"{where} is not a patchkit root (it names no namespace)", "use the root.json `patchkit root init` wrote")
    return ns


def parse_root(data: bytes, where: str) -> Metadata[Root]:
    """A root the user hands us (`trust add root.json`): self-signed to its own threshold."""
    root = _parse(data, Root, where)
    _check(root.signed, "root", root, where)
    namespace_of(root, where)
    return root


def load_repo(read: Callable[[str, int], bytes | None], namespace: str, *, pinned: bytes | None, where: str) -> Repo:
    """The registry's current metadata, every signature checked from `pinned` (or version 1) on.

    For publishers: expiry is not judged here (re-signing an expired timestamp is what a refresh
    is for), but every signature and every listed hash is.
    """
    first = read("1.root.json", MAX_ROOT_BYTES) if pinned is None else pinned
    if first is None:
        raise IntegrityError(f"{where}: the root of trust of {namespace} has no 1.root.json", "run `patchkit root init` first")
    root = parse_root(first, f"{where} root v1")
    if namespace_of(root, where) != namespace:
        raise TrustError(f"{where}: that root is for namespace {namespace_of(root, where)}, not {namespace}", "use this namespace's root")
    for v in range(root.signed.version + 1, root.signed.version + MAX_ROOT_VERSIONS + 1):
        data = read(f"{v}.root.json", MAX_ROOT_BYTES)
        if data is None:
            break
        new = _parse(data, Root, f"{where} root v{v}")
        _check(root.signed, "root", new, f"{where} root v{v} (by the previous root's keys)")
        _check(new.signed, "root", new, f"{where} root v{v}")
        if new.signed.version != v:
            raise IntegrityError(f"{where}: {v}.root.json holds version {new.signed.version}", "the metadata is damaged")
        root = new
    ts_data = read("timestamp.json", MAX_TIMESTAMP_BYTES)
    if ts_data is None:
        raise IntegrityError(f"{where}: no timestamp.json", "the registry's metadata is incomplete; restore it")
    timestamp = _parse(ts_data, Timestamp, f"{where} timestamp")
    _check(root.signed, "timestamp", timestamp, f"{where} timestamp")
    snapshot = _listed(read, "snapshot", timestamp.signed.snapshot_meta, Snapshot, MAX_SNAPSHOT_BYTES, where)
    _check(root.signed, "snapshot", snapshot, f"{where} snapshot")
    targets = _listed(read, "targets", snapshot.signed.meta.get("targets.json"), Targets, MAX_TARGETS_BYTES, where)
    _check(root.signed, "targets", targets, f"{where} targets")
    online = _listed(read, ONLINE, snapshot.signed.meta.get(f"{ONLINE}.json"), Targets, MAX_TARGETS_BYTES, where)
    _check(targets.signed, ONLINE, online, f"{where} {ONLINE}")
    return Repo(namespace, root, targets, online, snapshot, timestamp)


def _listed(read: Callable[[str, int], bytes | None], role: str, meta: MetaFile | None, want: type[Any], cap: int,
            where: str) -> Metadata[Any]:
    if meta is None:
        raise IntegrityError(f"{where}: the snapshot does not list {role}", "the registry's metadata is damaged")
    data = read(f"{meta.version}.{role}.json", cap)
    if data is None:
        raise IntegrityError(f"{where}: {meta.version}.{role}.json is missing", "the registry's metadata is incomplete")
    try:
        meta.verify_length_and_hashes(data)
    except RepositoryError:
        raise IntegrityError(f"{where}: {meta.version}.{role}.json does not match the hash its snapshot lists",
                             "the registry's metadata was altered") from None
    return _parse(data, want, f"{where} {role}")


__all__ = ["DEFAULT_ROOT_DAYS", "INDEX_PATTERN", "MAX_NAMES", "ONLINE", "Repo", "index_target", "load_repo", "namespace_of",
           "new_repo", "parse_root", "public_of", "signer", "tuf_key"]
