"""The root key holders' operations on a namespace's root of trust: create it, change its keys, show it.

Kept apart from `patchkit.registry.rooted` (what every client and publisher reads and writes),
because these build on the whole publish path (re-signing, index writes): only the offline root
keys change which online keys sign (`init`, `rotate_key`, `rotate_root`). `rotate_key
--compromised-since` is the recovery from a stolen online key: the stolen key (and whatever it
signed) is out of every role, and each name's index keeps only the versions the vendor vouches for
(its own ledger, `patchkit.registry.ledger`, or `--vouch`), re-signed by the new key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from patchkit import constants
from patchkit._internal.clock import fmt_time, utc_stamp
from patchkit._internal.files import atomic_write_bytes
from patchkit._internal.records import Record
from patchkit.errors import IntegrityError, NotFoundError, TrustError, UsageError
from patchkit.registry import ledger
from patchkit.registry.backends import open_registry
from patchkit.registry.base import Registry
from patchkit.registry.client import _read_index_raw, _write_index
from patchkit.registry.index import MAX_INDEX_BYTES, Index, IndexEntry, parse_index, verify_index
from patchkit.registry.keylog import _parse_when, is_reserved, publisher_trust
from patchkit.registry.resign import resign_files
from patchkit.registry.rooted import _commit, _load, has_root, listed_index
from patchkit.trust.keys import PrivateKey, keyid_of, load_private_key, load_public_key
from patchkit.trust.root import metadata as md

# -- root key holders -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RootChange(Record):
    namespace: str
    registry: str
    root_version: int
    online_keys: list[str]
    root_keys: list[str]
    threshold: int
    root_file: str | None = None
    names: dict[str, dict[str, Any]] = field(default_factory=dict)


def _keys(paths: list[Path], env: str | None) -> list[PrivateKey]:
    if not paths:
        raise UsageError("no --root-key given", "give the offline root key(s), e.g. --root-key root.pem")
    keys = [load_private_key(p, env) for p in paths]
    if len({keyid_of(k.public_key()) for k in keys}) != len(keys):
        raise UsageError("the same root key is given twice", "give distinct keys")
    return keys


def _result(reg: Registry, repo: md.Repo, out: Path | None, names: dict[str, dict[str, Any]] | None = None) -> RootChange:
    root_file = None
    if out is not None:
        atomic_write_bytes(out, repo.root.to_bytes(), mode=0o644)
        root_file = str(out)
    return RootChange(repo.namespace, reg.url, repo.root.signed.version, repo.keyids_of(md.ONLINE),
                      repo.keyids_of("root"), repo.root.signed.roles["root"].threshold, root_file, names or {})


def _check_root_keys(repo: md.Repo, keys: list[PrivateKey], what: str) -> None:
    have = set(repo.keyids_of("root"))
    given = [keyid_of(k.public_key()) for k in keys]
    strangers = [k[:16] for k in given if k not in have]
    if strangers:
        raise TrustError(f"{', '.join(strangers)}… {'is' if len(strangers) == 1 else 'are'} not a root key of "
                         f"{repo.namespace}", f"{what} needs the namespace's offline root keys")
    need = repo.root.signed.roles["root"].threshold
    if len(given) < need:
        raise TrustError(f"{what} needs {need} root keys of {repo.namespace}, {len(given)} given", "give more --root-key")


def init(namespace: str, root_keys: list[Path], online_key: Path, *, threshold: int = 1, registry: str | None = None,
         out: Path | None = None, expires_days: int = 30, passphrase_env: str | None = None,
         names: list[str] | None = None) -> RootChange:
    """Create the namespace's root of trust. `names` (migration): already published names whose
    current index `online_key` signed are listed at once; any other name is listed by its next publish."""
    import re

    from patchkit.manifest import NAME_PART

    if not re.fullmatch(NAME_PART, namespace):
        raise UsageError(f"invalid namespace {namespace!r}", "use lower case letters, digits, '.', '_', '-'")
    offline = _keys(root_keys, passphrase_env)
    online = load_private_key(online_key, passphrase_env)
    if keyid_of(online.public_key()) in {keyid_of(k.public_key()) for k in offline}:
        raise UsageError("the online key is also a root key", "keep the root keys offline: use another key for --online-key")
    reg = open_registry(registry)
    if has_root(reg, namespace):
        raise UsageError(f"{namespace} already has a root of trust in {reg.url}",
                         f"change keys with `patchkit root rotate-key {namespace}` or `patchkit root rotate-root {namespace}`")
    repo = md.new_repo(namespace, [k.public_key() for k in offline], threshold, [online.public_key()])
    listed = _existing(reg, namespace, online, repo, names or [])
    repo.sign(online=[online], offline=offline, online_days=expires_days)
    _commit(reg, namespace, repo, None, f"root of trust for {namespace}")
    return _result(reg, repo, out, listed)


def _existing(reg: Registry, namespace: str, online: PrivateKey, repo: md.Repo, names: list[str]) -> dict[str, dict[str, Any]]:
    """Migration: every name of the namespace whose current index the online key signed is listed
    (its index and key log keep being served, for patchkit versions that do not read the root)."""
    listed: dict[str, dict[str, Any]] = {}
    from patchkit.manifest import validate_name

    for name in names:
        validate_name(name)
        if is_reserved(name) or not name.startswith(f"{namespace}/"):
            raise UsageError(f"--name {name} is not a patch of {namespace}", f"give names like {namespace}/NAME")
        try:
            data, sig, head = _read_index_raw(reg, name)
            index, _ = verify_index(data, sig, publisher_trust(reg, name, online), name, where=f"{reg.url} {name}")
        except (TrustError, IntegrityError, NotFoundError) as exc:
            raise type(exc)(f"cannot migrate {name}: {exc.message}",
                            "its current index must verify under --online-key (a key the key log says is standing)") from None
        repo.list_index(name, data, head, index.index_version)
        listed[name] = {"listed": True, "index_version": index.index_version}
    return listed


@dataclass
class _Plan:
    keep: dict[str, IndexEntry]
    dropped: dict[str, str]  # version → why


def _plan(reg: Registry, index: Index, compromised_since: datetime | None, vouched: dict[str, ledger.Published]) -> _Plan:
    """Which versions of a name survive a key change, and with which files.

    A planned rotation keeps the index as the root of trust lists it. After a compromise the
    registry's word is the thief's: only versions the vendor vouches for (ledger or --vouch) and
    published before the compromise stay, with the vouched digest and commit (files the thief
    swapped are put back, or the version is dropped).
    """
    plan = _Plan({}, {})
    for version, e in sorted(index.versions.items()):
        if compromised_since is None:
            plan.keep[version] = e
            continue
        rec = vouched.get(version)
        if rec is None:
            plan.dropped[version] = "not in this machine's record of what it published (nor --vouch)"
        elif rec.published_at >= compromised_since:
            plan.dropped[version] = f"published {fmt_time(rec.published_at)}, after the compromise"
        elif rec.digest != e.digest:
            plan.keep[version] = IndexEntry(**{**vars(e), "digest": rec.digest, "commit": rec.commit, "files": {}})
        else:
            plan.keep[version] = e
    return plan


def _recover_name(reg: Registry, name: str, key: PrivateKey, plan: _Plan, *, expires_days: int) -> tuple[bytes, str, int, dict[str, Any]]:
    """Re-sign the kept versions with `key` and write the cleaned index; returns (index bytes, commit, version, report)."""
    refs = reg.refs(name)
    head = refs.main if refs else None
    listed = listed_index(reg, name)
    raw = listed[0] if listed else reg.read(name, head, constants.INDEX_FILE, MAX_INDEX_BYTES) if head else None
    current = parse_index(raw, where=f"{reg.url} {name}") if raw else Index.empty(name)
    new = current.next(expires_days=expires_days)
    new.versions = {}
    resigned: list[str] = []
    for version, e in plan.keep.items():
        try:
            files = resign_files(reg, name, e, key, None)
        except (IntegrityError, NotFoundError) as exc:
            plan.dropped[version] = f"its vouched files are not in the registry: {exc.message}"
            continue
        head = reg.commit(name, files, f"{name} {version}: re-signed by the new key", parent=head)
        new.versions[version] = IndexEntry(**{**vars(e), "commit": head, "signed_at": utc_stamp(),
                                              "files": {f: len(b) for f, b in files.items()}})
        ledger.record(reg.ident, name, version, e.digest, head)
        resigned.append(version)
    commit = _write_index(reg, name, new, key, head, f"index {new.index_version}: recovery", chain=None, tuf=False)
    data = reg.read(name, commit, constants.INDEX_FILE, MAX_INDEX_BYTES)
    assert data is not None
    return data, commit, new.index_version, {"kept": resigned, "dropped": plan.dropped, "index_version": new.index_version}


def rotate_key(namespace: str, root_keys: list[Path], new_key: Path, *, old: str | None = None,
               compromised_since: str | None = None, vouch: list[str] | None = None, registry: str | None = None,
               expires_days: int = 30, passphrase_env: str | None = None, out: Path | None = None) -> RootChange:
    """Replace the online key(s) by `new_key` (root keys sign); re-sign every name's kept versions."""
    offline = _keys(root_keys, passphrase_env)
    new = load_private_key(new_key, passphrase_env)
    since = _parse_when(compromised_since, "--compromised-since")
    reg = open_registry(registry)
    repo, head = _load(reg, namespace)
    _check_root_keys(repo, offline, "rotate-key")
    current = repo.keyids_of(md.ONLINE)
    if old is not None and not any(k.startswith(old.lower()) for k in current) and old not in current:
        raise UsageError(f"{old} is not an online key of {namespace} (those are {', '.join(k[:16] for k in current)})",
                         "give the key id shown by `patchkit root show`")
    by_hand: dict[str, dict[str, ledger.Published]] = {}
    for text in vouch or []:
        vname, vversion, digest = ledger.parse_vouch(text)
        by_hand.setdefault(vname, {})[vversion] = ledger.Published(vversion, digest, "", datetime.min.replace(tzinfo=UTC))
    report: dict[str, dict[str, Any]] = {}
    listings: list[tuple[str, bytes, str, int]] = []
    for path in sorted(repo.entries()):
        name = f"{namespace}/{path.split('/', 1)[0]}"
        listed = listed_index(reg, name)
        index = parse_index(listed[0], where=f"{reg.url} {name}") if listed else Index.empty(name)
        vouched = {**ledger.published(reg.ident, name), **_with_commits(reg, name, index, by_hand.get(name, {}))}
        plan = _plan(reg, index, since, vouched)
        with reg.writer_lock(name):
            data, commit, index_version, rep = _recover_name(reg, name, new, plan, expires_days=expires_days)
        listings.append((name, data, commit, index_version))
        report[name] = rep
    repo.set_online_keys([new.public_key()])
    for name, data, commit, index_version in listings:
        repo.list_index(name, data, commit, index_version)
    repo.sign(online=[new], offline=offline, old_root=[], online_days=expires_days)
    _commit(reg, namespace, repo, head, f"root v{repo.root.signed.version}: online key replaced")
    return _result(reg, repo, out, report)


def _with_commits(reg: Registry, name: str, index: Index, by_hand: dict[str, ledger.Published]) -> dict[str, ledger.Published]:
    """--vouch gives digests; the commit is the registry's, when its files match (checked on re-signing)."""
    out = {}
    for version, rec in by_hand.items():
        e = index.versions.get(version)
        commit = e.commit if e is not None else ""
        if e is not None and e.digest != rec.digest:
            tagged = reg.refs(name)
            commit = tagged.tags.get(f"v{version}", "") if tagged else ""
        out[version] = ledger.Published(version, rec.digest, commit, rec.published_at)
    return out


def rotate_root(namespace: str, root_keys: list[Path], new_root_keys: list[Path], online_key: Path, *, threshold: int = 1,
                registry: str | None = None, out: Path | None = None, expires_days: int = 30,
                passphrase_env: str | None = None) -> RootChange:
    """A new root version with new root keys: signed by the old root's threshold and the new one's."""
    old = _keys(root_keys, passphrase_env)
    new = _keys(new_root_keys, passphrase_env)
    online = load_private_key(online_key, passphrase_env)
    reg = open_registry(registry)
    repo, head = _load(reg, namespace)
    _check_root_keys(repo, old, "rotate-root")
    if keyid_of(online.public_key()) not in repo.keyids_of(md.ONLINE):
        raise TrustError(f"--online-key is not an online key of {namespace}", "give the current online key (it re-signs snapshot and timestamp)")
    repo.set_root_keys([k.public_key() for k in new], threshold)
    repo.sign(online=[online], offline=new, old_root=old, online_days=expires_days)
    _commit(reg, namespace, repo, head, f"root v{repo.root.signed.version}: root keys replaced")
    return _result(reg, repo, out)


def show(namespace: str, *, registry: str | None = None) -> dict[str, Any]:
    reg = open_registry(registry)
    repo, _ = _load(reg, namespace)
    return {
        "namespace": namespace,
        "registry": reg.url,
        "root_version": repo.root.signed.version,
        "root_expires": fmt_time(repo.root.signed.expires),
        "root_keys": repo.keyids_of("root"),
        "threshold": repo.root.signed.roles["root"].threshold,
        "online_keys": repo.keyids_of(md.ONLINE),
        "timestamp_version": repo.timestamp.signed.version,
        "expires": fmt_time(min(repo.timestamp.signed.expires, repo.snapshot.signed.expires, repo.online.signed.expires)),
        "names": sorted(f"{namespace}/{p.split('/', 1)[0]}" for p in repo.entries()),
    }


def public_keyid(path: Path) -> str:
    return keyid_of(load_public_key(path))


__all__ = ["RootChange", "init", "public_keyid", "rotate_key", "rotate_root", "show"]
