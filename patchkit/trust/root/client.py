"""A customer's view of a namespace's root of trust: python-tuf's ngclient, over any store.

The customer pins a namespace's root (`patchkit trust add root.json --scope acme/*`). Every
command that reads a name of that namespace from a registry runs ngclient's refresh from that pin:
newer roots (each signed by the old root's threshold and its own), then timestamp, snapshot,
targets and the `online` delegation, with TUF's rollback, freeze and mix-and-match checks. What
it learns is kept per (namespace, registry) under `$PATCHKIT_HOME/tuf/`, so:
- a root rotation, once seen, is never undone by a registry that serves the old one;
- offline, the last verified metadata stands in only while it is unexpired (the same check
  ngclient makes online, run over the cached files: `source=None`).

The files come from a `Source` (the registry's store, `patchkit.registry.rooted`); this module
knows nothing of registries.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import Root, TargetFile, Targets
from tuf.ngclient import FetcherInterface, Updater, UpdaterConfig

from patchkit import constants
from patchkit._internal.clock import fmt_time, now_utc
from patchkit._internal.files import file_lock
from patchkit.errors import (
    EndlessDataError,
    FreezeError,
    IntegrityError,
    PatchkitError,
    ReadOnlyError,
    RegistryError,
    RollbackError,
    TrustError,
)
from patchkit.trust.keys import PublicKey
from patchkit.trust.root import metadata as md
from patchkit.trust.root.pin import RootPin

BASE_URL = "patchkit-tuf:///"
FILE_RE = re.compile(r"^(?:[1-9][0-9]{0,8}\.)?(?:root|timestamp|snapshot|targets|[a-z][a-z0-9-]{0,63})\.json$")
CONFIG = UpdaterConfig(
    max_root_rotations=md.MAX_ROOT_VERSIONS,
    max_delegations=8,
    root_max_length=md.MAX_ROOT_BYTES,
    timestamp_max_length=md.MAX_TIMESTAMP_BYTES,
    snapshot_max_length=md.MAX_SNAPSHOT_BYTES,
    targets_max_length=md.MAX_TARGETS_BYTES,
)

Source = Callable[[str], Iterator[bytes]]


class Missing(Exception):
    """A source has no such file (ngclient reads it as HTTP 404: e.g. no newer root)."""


@dataclass(frozen=True)
class View:
    """What a verified refresh says about one name: its index target and the keys that may sign it."""

    namespace: str
    name: str
    target: TargetFile | None
    keys: list[PublicKey]
    expires: datetime  # the earliest expiry of timestamp, snapshot and the role that listed the target
    root_version: int
    online: bool  # False: from the cached metadata only

    @property
    def commit(self) -> str | None:
        custom = self.target.unrecognized_fields.get("custom") if self.target else None
        value = custom.get("commit") if isinstance(custom, dict) else None
        return value if isinstance(value, str) and re.fullmatch(r"[0-9a-f]{40,64}", value) else None

    @property
    def index_version(self) -> int:
        custom = self.target.unrecognized_fields.get("custom") if self.target else None
        value = custom.get("index_version") if isinstance(custom, dict) else None
        return value if isinstance(value, int) and not isinstance(value, bool) else 0


class _Fetcher(FetcherInterface):
    """ngclient's downloads, answered from a store (`source`) or, offline, from the cache itself."""

    def __init__(self, source: Source | None, cache: Path) -> None:
        self.source = source
        self.cache = cache

    def _fetch(self, url: str) -> Iterator[bytes]:
        name = url[len(BASE_URL):] if url.startswith(BASE_URL) else ""
        if not FILE_RE.match(name):
            raise tuf_errors.DownloadHTTPError(f"{url!r} is not a metadata file name", 404)
        if self.source is None:
            # Offline: only the cached timestamp is "served" (ngclient finds it equal to the one it
            # trusts and keeps that); everything else must already be in the cache.
            if name != "timestamp.json":
                raise tuf_errors.DownloadHTTPError(f"{name} is not cached", 404)
            return iter([(self.cache / "timestamp.json").read_bytes()])
        try:
            return self.source(name)
        except Missing:
            raise tuf_errors.DownloadHTTPError(f"{name} is not in the registry", 404) from None


def cache_root(namespace: str) -> Path:
    return constants.patchkit_home() / "tuf" / namespace


def _cache_dir(namespace: str, registry_ident: str) -> Path:
    return cache_root(namespace) / hashlib.sha256(registry_ident.encode()).hexdigest()[:24]


def _prepare(cache: Path, pin: RootPin) -> None:
    """A cache made from another pin (the customer re-pinned the namespace) is started again."""
    marker = cache / "pin.sha256"
    if cache.is_dir() and (not marker.is_file() or marker.read_text().strip() != pin.sha256):
        shutil.rmtree(cache)
    cache.mkdir(parents=True, exist_ok=True)
    if not marker.is_file():
        marker.write_text(pin.sha256 + "\n")


def _signing_keys(updater: Updater, path: str, where: str) -> tuple[list[PublicKey], datetime]:
    """The keys of the role that listed `path` (ngclient's own walk order), and its expiry.

    ngclient returns the target but not who listed it; patchkit verifies each artifact's own
    signature against that role's keys, so the same walk is repeated over what ngclient verified.
    """
    trusted = updater._trusted_set  # the metadata ngclient verified in this refresh
    top: Targets = trusted["targets"]  # type: ignore[assignment]
    root: Root = trusted.root
    if path in top.targets:
        return [md.public_of(root.get_key(k), where) for k in root.roles["targets"].keyids], top.expires
    if top.delegations is not None and top.delegations.roles is not None:
        for role_name, _terminating in top.delegations.get_roles_for_target(path):
            if role_name not in trusted:
                continue
            role: Targets = trusted[role_name]  # type: ignore[assignment]
            if path in role.targets:
                keyids = top.delegations.roles[role_name].keyids
                return [md.public_of(top.delegations.keys[k], where) for k in keyids], role.expires
    raise TrustError(f"{where}: {path} is listed by a nested delegation", "patchkit delegates one level only; ask the publisher")


def _translate(exc: Exception, where: str, namespace: str, online: bool) -> PatchkitError:
    cause = exc.__cause__ if isinstance(exc, tuf_errors.DownloadError) else None
    if isinstance(cause, PatchkitError):
        return cause
    refresh = (f"the publisher of {namespace} must re-sign its metadata (`patchkit index refresh NS/NAME --key KEY`)"
               if online else f"reconnect to the registry: offline, {namespace}'s metadata is trusted only until it expires")
    if isinstance(exc, tuf_errors.ExpiredMetadataError):
        return FreezeError(f"{where}: {namespace}'s root-of-trust metadata has expired ({exc}) (freeze protection)", refresh)
    if isinstance(exc, tuf_errors.BadVersionNumberError):
        return RollbackError(f"{where}: {namespace}'s root-of-trust metadata went back to an older version ({exc}) "
                             "(rollback protection)", "the registry is serving old data; report it to the publisher")
    if isinstance(exc, tuf_errors.UnsignedMetadataError):
        return TrustError(f"{where}: {namespace}'s metadata is not signed by the keys its root of trust names ({exc})",
                          "it was written by someone without the publisher's keys; do not use this registry until "
                          "the publisher restores it")
    if isinstance(exc, tuf_errors.LengthOrHashMismatchError):
        return IntegrityError(f"{where}: {namespace}'s metadata does not match the hashes its snapshot lists ({exc})",
                              "the registry's metadata was altered; report it to the publisher")
    if isinstance(exc, tuf_errors.DownloadLengthMismatchError):
        return EndlessDataError(f"{where}: {namespace}'s metadata is longer than allowed ({exc})",
                                "the registry is misbehaving; refusing endless data")
    if isinstance(exc, tuf_errors.DownloadHTTPError) and exc.status_code == 404:
        what = ("has no root-of-trust metadata for it (`NS/patchkit-tuf`)" if online else
                "was never reached from this machine, so no verified metadata is cached")
        return RegistryError(f"{where}: the registry {what} ({namespace})",
                             "the publisher runs `patchkit root init` (or `root migrate`) once; until then the name cannot "
                             "be verified against the root you pinned" if online else
                             "reach the registry once, so its metadata can be verified and kept")
    if isinstance(exc, tuf_errors.DownloadError):
        return RegistryError(f"{where}: cannot read {namespace}'s metadata: {exc}", "check the registry and try again")
    return IntegrityError(f"{where}: {namespace}'s root-of-trust metadata is invalid: {exc}",
                          "the registry's metadata is damaged or was tampered with; report it to the publisher")


def _expired_cache(cache: Path, where: str, namespace: str) -> None:
    """Offline, ngclient reports an expired cache as a missing download (it tries to replace the
    expired file): say what it is, a freeze (exit 3), not an unreachable registry."""
    from tuf.api.metadata import Metadata

    try:
        ts = Metadata[Any].from_bytes((cache / "timestamp.json").read_bytes())
    except Exception:  # no cache, or an unreadable one: the caller's error stands
        return
    if ts.signed.is_expired(now_utc()):
        raise FreezeError(f"{where}: the registry cannot be reached, and {namespace}'s metadata this machine verified "
                          f"last expired at {fmt_time(ts.signed.expires)} (freeze protection)",
                          "reconnect to the registry: offline, a namespace's metadata is trusted only until it expires")


def _updater(cache: Path, pin: RootPin, source: Source | None) -> Updater:
    """ngclient over `cache`, starting from the newest root it verified there before (it chains to
    the pin: a cache made from another pin was cleared), or from the pin itself. Starting from the
    cached root spares re-verifying every root version at each command."""
    fetcher = _Fetcher(source, cache)
    if (cache / "root.json").is_file():
        try:
            return Updater(str(cache), BASE_URL, fetcher=fetcher, config=CONFIG, bootstrap=None)
        except (OSError, tuf_errors.RepositoryError, ValueError):
            pass  # a damaged cache: start again from the pin
    return Updater(str(cache), BASE_URL, fetcher=fetcher, config=CONFIG, bootstrap=pin.root)


def _run(cache: Path, pin: RootPin, source: Source | None, name: str, where: str) -> View:
    updater = _updater(cache, pin, source)
    updater._trusted_set.reference_time = now_utc()
    path = md.index_target(name)
    try:
        updater.refresh()
        target = updater.get_targetinfo(path)
    except (tuf_errors.RepositoryError, tuf_errors.DownloadError) as exc:
        if source is None:
            _expired_cache(cache, where, pin.namespace)
        raise _translate(exc, where, pin.namespace, source is not None) from None
    trusted = updater._trusted_set
    expires = min(trusted.timestamp.expires, trusted.snapshot.expires, trusted["targets"].expires)
    keys: list[PublicKey] = []
    if target is not None:
        keys, role_expires = _signing_keys(updater, path, where)
        expires = min(expires, role_expires)
    return View(pin.namespace, name, target, keys, expires, trusted.root.version, source is not None)


def view(pin: RootPin, name: str, *, registry_ident: str | None, source: Source | None, where: str) -> View:
    """Refresh `pin`'s namespace from `source` (None: from this machine's cache only) and look `name` up.

    `registry_ident` None with `source` None: the freshest cache of any registry (verifying a
    directory, which names no registry). A read-only PATCHKIT_HOME refreshes in a scratch copy.
    """
    caches = [_cache_dir(pin.namespace, registry_ident)] if registry_ident is not None else _all_caches(pin.namespace)
    if not caches:
        raise RegistryError(f"{where}: {name} is in {pin.namespace}, whose root of trust you pinned, but this machine "
                            "has never read its metadata from a registry",
                            f"verify it by its registry ref (`patchkit verify {name}@VERSION`) or `patchkit pull` it once")
    errors: list[PatchkitError] = []
    views: list[View] = []
    for cache in caches:
        try:
            views.append(_one(cache, pin, source, name, where))
        except PatchkitError as exc:
            errors.append(exc)
    if not views:
        raise errors[0]
    return max(views, key=lambda v: (v.root_version, v.index_version, v.expires))


def _all_caches(namespace: str) -> list[Path]:
    root = cache_root(namespace)
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / "timestamp.json").is_file()) if root.is_dir() else []


def _one(cache: Path, pin: RootPin, source: Source | None, name: str, where: str) -> View:
    try:
        with file_lock(cache.parent / f"{cache.name}.lock"):
            _prepare(cache, pin)
            return _run(cache, pin, source, name, where)
    except (ReadOnlyError, PermissionError):
        with tempfile.TemporaryDirectory(prefix="patchkit-tuf-") as tmp:
            scratch = Path(tmp) / "m"
            if cache.is_dir():
                shutil.copytree(cache, scratch, symlinks=True)
            else:
                scratch.mkdir()
            with contextlib.suppress(OSError):
                (scratch / "pin.sha256").write_text(pin.sha256 + "\n")
            return _run(scratch, pin, source, name, where)


def cached_online_keys(pin: RootPin) -> tuple[list[PublicKey], int]:
    """The online keys `pin`'s namespace delegates, per the freshest unexpired metadata this machine
    verified from any registry (no download). For a directory, which names no registry."""
    caches = _all_caches(pin.namespace)
    where = f"the root of trust of {pin.namespace}"
    if not caches:
        raise RegistryError(f"{where}: this machine has never read that namespace's metadata from a registry, so it "
                            "cannot tell which keys the root delegates",
                            "pull the patch once (`patchkit pull NS/NAME@VERSION`), or verify it by its registry ref")
    best: tuple[int, int, list[PublicKey]] | None = None
    errors: list[PatchkitError] = []
    for cache in caches:
        try:
            with tempfile.TemporaryDirectory(prefix="patchkit-tuf-") as tmp:
                scratch = Path(tmp) / "m"
                shutil.copytree(cache, scratch, symlinks=True)
                updater = _updater(scratch, pin, None)
                updater._trusted_set.reference_time = now_utc()
                try:
                    updater.refresh()
                    updater.get_targetinfo(md.INDEX_PATTERN.replace("*", "_"))  # loads the online role
                except (tuf_errors.RepositoryError, tuf_errors.DownloadError) as exc:
                    raise _translate(exc, where, pin.namespace, False) from None
                trusted = updater._trusted_set
                top: Targets = trusted["targets"]  # type: ignore[assignment]
                if top.delegations is None or top.delegations.roles is None or md.ONLINE not in top.delegations.roles:
                    continue
                keys = [md.public_of(top.delegations.keys[k], where) for k in top.delegations.roles[md.ONLINE].keyids]
                rank = (trusted.root.version, trusted.timestamp.version)
                if best is None or rank > best[:2]:
                    best = (*rank, keys)
        except PatchkitError as exc:
            errors.append(exc)
    if best is None:
        raise errors[0] if errors else TrustError(f"{where} delegates to no online keys", "ask the publisher")
    return best[2], best[0]


def describe(v: View) -> str:
    return f"root v{v.root_version}, valid until {fmt_time(v.expires)}"


def metadata_dump(v: View) -> dict[str, Any]:
    return {"namespace": v.namespace, "root_version": v.root_version, "expires": fmt_time(v.expires), "online": v.online}


__all__ = ["BASE_URL", "Missing", "RootPin", "Source", "View", "cache_root", "cached_online_keys", "describe", "metadata_dump", "view"]
