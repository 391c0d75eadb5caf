"""A namespace's root of trust in a registry: TUF metadata beside the artifacts, and what uses it.

The metadata (`patchkit.trust.root.metadata`) lives in the reserved repository `NS/patchkit-tuf`, whose
`main` holds every root version (`N.root.json`), the current and previous consistent-snapshot
files, and `timestamp.json`; one commit per change, so a reader sees one consistent state. The
same store type serves all three backends (a `file://` directory, the local registry, a Hub
repository), so the fetcher below is the one each backend gets.

- **Customers** (`load_index`): for a name whose namespace root they pinned, ngclient refreshes
  from the pin; the index is the one the `online` role lists (commit, length, sha256), and the
  artifacts must be signed by that role's keys. Key logs are not read for such names.
- **Publishers** (`after_index_write`): every index change also lists the new index in `online`
  and re-signs snapshot and timestamp, with the publisher's own (online) key, which the root must
  delegate.
- **Root key holders** (`init`, `rotate_key`, `rotate_root`): the only way to add, replace or drop
  an online key. `rotate_key --compromised-since T` is the recovery: the stolen key (and whatever
  it signed) is out of every role, and each name's index keeps only the versions the vendor
  vouches for (its own ledger, `patchkit.registry.ledger`, or `--vouch`), re-signed by the new key.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from tuf.api.exceptions import RepositoryError

from patchkit import constants
from patchkit.errors import (
    IntegrityError,
    MixAndMatchError,
    NotFoundError,
    RegistryError,
    TrustError,
)
from patchkit.registry.base import Registry
from patchkit.registry.index import MAX_INDEX_BYTES, Index, check_and_record, check_fresh, parse_index
from patchkit.trust.keys import PrivateKey, keyid_of
from patchkit.trust.root import client as tuf_client
from patchkit.trust.root import metadata as md
from patchkit.trust.root.client import RootPin, View
from patchkit.trust.store import TrustStore

TUF_REPO = "patchkit-tuf"
MAX_COMMIT_RETRIES = 5


def tuf_repo(namespace: str) -> str:
    return f"{namespace}/{TUF_REPO}"


def has_root(reg: Registry, namespace: str) -> bool:
    refs = reg.refs(tuf_repo(namespace))
    return refs is not None and refs.main is not None


def _head(reg: Registry, namespace: str) -> str | None:
    refs = reg.refs(tuf_repo(namespace))
    return refs.main if refs is not None else None


def _source(reg: Registry, namespace: str) -> tuf_client.Source:
    """ngclient's downloads from one commit of `NS/patchkit-tuf` (one consistent state per refresh)."""
    head = _head(reg, namespace)
    repo = tuf_repo(namespace)

    def source(filename: str) -> Iterator[bytes]:
        if head is None:
            raise tuf_client.Missing(filename)
        cm = reg.stream(repo, head, filename)
        try:
            stream = cm.__enter__()
        except NotFoundError:
            raise tuf_client.Missing(filename) from None

        def chunks() -> Iterator[bytes]:
            try:
                yield from stream.chunks
            finally:
                cm.__exit__(None, None, None)

        return chunks()

    return source


def _reader(reg: Registry, namespace: str, head: str | None) -> Callable[[str, int], bytes | None]:
    def read(filename: str, limit: int) -> bytes | None:
        return None if head is None else reg.read(tuf_repo(namespace), head, filename, limit)

    return read


# -- customers ------------------------------------------------------------------------------------


def _index_bytes(reg: Registry, name: str, view: View, where: str) -> bytes:
    if view.target is None:
        raise NotFoundError(f"no patch named {name} in {reg.url}: the root of trust of {view.namespace} lists no such name",
                            "check the name, or ask the publisher whether it was published")
    commit = view.commit
    if commit is None or view.target.length > MAX_INDEX_BYTES:
        raise IntegrityError(f"{where}: the metadata's entry for {name} names no usable commit or is too large",
                             "the registry's metadata is damaged; report it to the publisher")
    data = reg.read(name, commit, constants.INDEX_FILE, view.target.length)
    if data is None:
        raise IntegrityError(f"{where}: the index the root of trust lists for {name} (commit {commit[:12]}) is missing",
                             "the registry lost or hid it; report it to the publisher")
    _matches(view, data, where, name)
    return data


def _matches(view: View, data: bytes, where: str, name: str) -> None:
    assert view.target is not None
    try:
        view.target.verify_length_and_hashes(data)
    except RepositoryError:
        raise MixAndMatchError(f"{where}: the index of {name} is not the one its root of trust lists (sha256 differs)",
                               "the registry served another index; report it to the publisher") from None


def _admit(data: bytes, view: View, trust: TrustStore, pin: RootPin, name: str, where: str) -> Index:
    index = parse_index(data, where=where)
    if index.name != name:
        raise IntegrityError(f"{where}: the index is for {index.name!r}, not {name!r}", "the registry served another patch's index")
    if view.index_version and index.index_version != view.index_version:
        raise MixAndMatchError(f"{where}: the index of {name} is version {index.index_version}, the metadata lists "
                               f"{view.index_version}", "the registry's metadata is damaged")
    trust.delegate(name, view.keys, pin, root_version=view.root_version)
    if view.keys:
        index.attest_to(trust, keyid_of(view.keys[0]))
    return index


def load_index(reg: Registry, name: str, trust: TrustStore, pin: RootPin) -> Index:
    """The index of `name` as the namespace's root of trust vouches for it now (ngclient refresh)."""
    where = f"{reg.url} {name}"
    view = tuf_client.view(pin, name, registry_ident=reg.ident, source=_source(reg, pin.namespace), where=where)
    data = _index_bytes(reg, name, view, where)
    index = _admit(data, view, trust, pin, name, where)
    check_fresh(index, where=where, registry_url=reg.url)
    check_and_record(index, data, reg.ident, where=where)
    from patchkit.registry.index import remember_index

    remember_index(reg.ident, name, data, b"")
    return index


def remembered(registry_ident: str, name: str, data: bytes, trust: TrustStore, pin: RootPin) -> Index:
    """A remembered index, checked against the cached metadata (which must still be unexpired)."""
    where = f"the remembered index of {name}"
    view = tuf_client.view(pin, name, registry_ident=registry_ident, source=None, where=where)
    if view.target is None:
        raise RegistryError(f"{where}: the cached metadata of {pin.namespace} no longer lists {name}",
                            "reach the registry once, so its current metadata can be verified")
    _matches(view, data, where, name)
    return _admit(data, view, trust, pin, name, where)


def remembered_index(registry_ident: str, name: str, trust: TrustStore) -> Index | None:
    """The last index verified for (registry, name): under a pinned root, re-checked against the
    cached metadata (unexpired); otherwise by its own signature (`index.remembered_index`)."""
    from patchkit.registry import index as index_mod

    pin = trust.root_for(name)
    if pin is None:
        return index_mod.remembered_index(registry_ident, name, trust)
    data = index_mod.remembered_bytes(registry_ident, name)
    return None if data is None else remembered(registry_ident, name, data, trust, pin)


# -- publishers -------------------------------------------------------------------------------------


def _vendor_pin(namespace: str) -> bytes | None:
    """The root this machine pinned for `namespace` (whatever its scopes), where a publisher's reading
    of the registry's metadata starts; without one it starts from the registry's own version 1."""
    if not constants.default_trust_file().exists():
        return None
    return next((r.root for r in TrustStore.load().roots if r.namespace == namespace), None)


def _load(reg: Registry, namespace: str) -> tuple[md.Repo, str | None]:
    head = _head(reg, namespace)
    if head is None:
        raise NotFoundError(f"{reg.url} has no root of trust for {namespace}", "create it with `patchkit root init`")
    repo = md.load_repo(_reader(reg, namespace, head), namespace, pinned=_vendor_pin(namespace),
                        where=f"{reg.url} {tuf_repo(namespace)}")
    return repo, head


def _commit(reg: Registry, namespace: str, repo: md.Repo, head: str | None, message: str) -> str:
    files = repo.files()
    stale = [f for f in repo.stale() if f not in files] if head is not None else []
    reg.ensure_repo(tuf_repo(namespace))
    return reg.commit(tuf_repo(namespace), files, message, parent=head, delete=stale)


def listed_index(reg: Registry, name: str) -> tuple[bytes, str] | None:
    """The index of `name` the namespace's metadata lists, and its commit (publisher side; signatures
    checked, expiry not); None when the namespace has no root of trust or does not list the name yet."""
    namespace = name.split("/", 1)[0]
    if not has_root(reg, namespace):
        return None
    repo, _ = _load(reg, namespace)
    target = repo.entries().get(md.index_target(name))
    if target is None:
        return None
    custom = target.unrecognized_fields.get("custom")
    commit = custom.get("commit") if isinstance(custom, dict) else None
    where = f"{reg.url} {name}"
    if not isinstance(commit, str):
        raise IntegrityError(f"{where}: the metadata's entry names no commit", "the registry's metadata is damaged")
    data = reg.read(name, commit, constants.INDEX_FILE, min(target.length, MAX_INDEX_BYTES))
    if data is None:
        raise IntegrityError(f"{where}: the listed index (commit {commit[:12]}) is missing", "restore the registry")
    try:
        target.verify_length_and_hashes(data)
    except RepositoryError:
        raise MixAndMatchError(f"{where}: the index at commit {commit[:12]} is not the one the metadata lists",
                               "the registry was tampered with; restore it") from None
    return data, commit


def check_publisher(reg: Registry, name: str, key: PrivateKey) -> tuple[md.Repo, str | None] | None:
    """Refuse, before anything is written, a publisher key the namespace's root does not delegate.

    Returns the metadata it read (None: the namespace has no root of trust), which `after_index_write`
    builds on rather than reading and verifying it all again."""
    namespace = name.split("/", 1)[0]
    if not has_root(reg, namespace):
        return None
    loaded = _load(reg, namespace)
    _delegated(loaded[0], key, reg, namespace)
    return loaded


def _delegated(repo: md.Repo, key: PrivateKey, reg: Registry, namespace: str) -> None:
    kid = keyid_of(key.public_key())
    if kid not in repo.keyids_of(md.ONLINE):
        raise TrustError(f"key {kid[:16]}… is not an online key of {namespace}'s root of trust in {reg.url}",
                         "only keys the root delegates may publish there; the root key holders add one with "
                         f"`patchkit root rotate-key {namespace} …`")


def after_index_write(reg: Registry, name: str, key: PrivateKey, data: bytes, commit: str, index_version: int, *,
                      expires_days: float, loaded: tuple[md.Repo, str | None] | None) -> None:
    """List a new index in the namespace's metadata, signed by `key`. `loaded` is what `check_publisher`
    read (None: no root of trust, nothing to list); a commit refused because another writer moved the
    metadata meanwhile is retried on a fresh read."""
    if loaded is None:
        return
    namespace = name.split("/", 1)[0]
    for attempt in range(MAX_COMMIT_RETRIES):
        repo, head = loaded if attempt == 0 else _load(reg, namespace)
        _delegated(repo, key, reg, namespace)
        repo.list_index(name, data, commit, index_version)
        repo.sign(online=[key], online_days=expires_days)
        try:
            _commit(reg, namespace, repo, head, f"{name}: index {index_version}")
            return
        except RegistryError:
            if attempt == MAX_COMMIT_RETRIES - 1:
                raise


__all__ = ["TUF_REPO", "after_index_write", "check_publisher", "has_root", "listed_index", "load_index", "remembered",
           "remembered_index", "tuf_repo"]
