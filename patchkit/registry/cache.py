"""The download cache: `$PATCHKIT_HOME/cache/NS/NAME/<commit>/`, verified before it is visible.

A download goes to a private staging directory, is cut off at the sizes the signed index
states (endless data), verified (signature, trust, files, digest in the index), and only then
renamed into place under a per-entry file lock. A failed or interrupted download leaves no
cache entry; staging left behind by a killed process is swept by the next one.

Every cache path is built from a validated name and commit id and proven to stay under the
cache root (`_io.confined`) before anything is created or removed; a removal that fails is an
error, and an entry found in place is verified before it is used, never adopted blindly.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from patchkit import constants
from patchkit._internal.files import confined, file_lock, fsync_dir, fsync_tree, is_real_dir, remove_confined
from patchkit.artifact.verify import VerifyResult, verify_artifact
from patchkit.errors import (
    EndlessDataError,
    IntegrityError,
    MixAndMatchError,
    NotFoundError,
    PatchkitError,
    ReadOnlyError,
    TrustError,
)
from patchkit.manifest import validate_name
from patchkit.registry.base import Registry
from patchkit.registry.ids import commit_id
from patchkit.registry.index import IndexEntry
from patchkit.trust.store import TrustStore

# A patch is a small tensor plus JSON; an index entry claiming more than this is refused outright.
MAX_ARTIFACT_BYTES = constants.MAX_PATCH_TENSOR_BYTES + 16 * 1024 * 1024


def cache_root() -> Path:
    return constants.patchkit_home() / "cache"


def entry_dir(name: str, commit: str) -> Path:
    """`cache/NS/NAME/<commit>`, refused unless every part is plain and the result stays inside."""
    ns, _, short = validate_name(name).partition("/")
    return confined(cache_root(), ns, short, commit_id(commit, where=f"cache entry of {name}", error=IntegrityError),
                    what="cache path")


def _entry_lock(name: str, commit: str) -> Path:
    return confined(cache_root() / ".locks", f"{validate_name(name).replace('/', '--')}--"
                    f"{commit_id(commit, where=name, error=IntegrityError)}.lock", what="cache lock")


def _clear(path: Path) -> None:
    """Remove a damaged or foreign entry (a link, a file, a tampered copy), confirmed gone."""
    remove_confined(path, cache_root())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sweep_staging(root: Path) -> None:
    """Remove staging directories whose process is gone (killed mid-download)."""
    if not root.is_dir():
        return
    for d in root.iterdir():
        pid_text = d.name.split("-", 1)[0]
        if pid_text.isdigit() and int(pid_text) != os.getpid() and not _pid_alive(int(pid_text)) and is_real_dir(d):
            shutil.rmtree(d, ignore_errors=True)


def new_staging() -> Path:
    root = cache_root() / ".staging"
    try:
        root.mkdir(parents=True, exist_ok=True)
        _sweep_staging(root)
        return Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=root))
    except OSError as exc:
        raise ReadOnlyError(f"cannot write the download cache {cache_root()}: {exc.strerror}",
                            "patchkit downloads into PATCHKIT_HOME; point PATCHKIT_HOME at a writable directory") from None


@dataclass
class Fetched:
    """A verified artifact: either already in the cache, or staged and not yet visible."""

    name: str
    entry: IndexEntry
    path: Path
    result: VerifyResult
    staged: bool
    trust: TrustStore

    @property
    def final(self) -> Path:
        return entry_dir(self.name, self.entry.commit)

    def discard(self) -> None:
        if self.staged:
            shutil.rmtree(self.path, ignore_errors=True)

    def publish(self) -> Path:
        """Make a staged artifact visible in the cache (one rename, under the entry's lock).

        If an entry is already there (another process got there first), it is used only after
        it verifies as this very artifact; anything else in its place is removed first.
        """
        if not self.staged:
            return self.path
        final = self.final
        with file_lock(_entry_lock(self.name, self.entry.commit)):
            if os.path.lexists(final):
                if is_real_dir(final) and _verifies_as(final, self.name, self.entry, self.trust):
                    shutil.rmtree(self.path, ignore_errors=True)
                    self.path, self.staged = final, False
                    self.result.path = final
                    return final
                _clear(final)
            final.parent.mkdir(parents=True, exist_ok=True)
            fsync_tree(self.path)
            os.replace(self.path, final)
            fsync_dir(final.parent)
        self.path, self.staged = final, False
        self.result.path = final
        return final


def _verifies_as(path: Path, name: str, entry: IndexEntry, trust: TrustStore) -> bool:
    try:
        check_matches(verify_artifact(path, trust), name, entry, str(path))
    except PatchkitError:
        return False
    return True


def check_matches(result: VerifyResult, name: str, entry: IndexEntry, where: str) -> None:
    """Mix-and-match: the artifact must be exactly the one the signed index lists."""
    if result.name != name or result.version != entry.version:
        raise MixAndMatchError(
            f"{where} holds {result.name}@{result.version}, but the signed index lists it as {name}@{entry.version}",
            "the registry served another artifact (mix-and-match); do not use it",
        )
    if result.digest != entry.digest:
        raise MixAndMatchError(
            f"{where}: artifact digest {result.digest} of {name}@{entry.version} is not in the signed index "
            f"(which lists {entry.digest}; mix-and-match)",
            "the registry served an artifact the publisher did not list; do not use it",
        )


def verify_cached(name: str, entry: IndexEntry, trust: TrustStore) -> VerifyResult | None:
    """The cached artifact for this entry, re-verified; None when it is not cached.

    Something other than a real directory in the entry's place (a link to a tampered copy,
    a stray file) is not an entry: it raises IntegrityError like a damaged one.
    """
    final = entry_dir(name, entry.commit)
    if not os.path.lexists(final):
        return None
    if not is_real_dir(final):
        raise IntegrityError(f"cache entry {final} is not a directory", "it was replaced; it will be removed and re-downloaded")
    result = verify_artifact(final, trust)
    check_matches(result, name, entry, str(final))
    return result


def _progress(total: int, desc: str) -> Any:
    if constants.no_progress():
        return contextlib.nullcontext(None)
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, leave=False)


@contextlib.contextmanager
def _listed(where: str) -> Iterator[None]:
    """A file the signed index lists but the registry lacks is an integrity failure, not a typo."""
    try:
        yield
    except NotFoundError as exc:
        raise IntegrityError(f"{where}: the signed index lists it but the registry does not serve it ({exc.message})",
                             "the registry is damaged or tampered with; nothing was cached") from None


def _download_file(reg: Registry, name: str, entry: IndexEntry, fname: str, size: int, out: Path, bar: Any) -> None:
    where = f"{name}@{entry.version} {fname}"
    with _listed(where), reg.stream(name, entry.commit, fname) as s:
        if s.length is not None and s.length > size:
            raise EndlessDataError(f"{where}: the registry announces {s.length} bytes but the signed index states {size}",
                                 "refusing endless data; the registry is misbehaving")
        written = 0
        with open(out, "wb") as fh:
            for chunk in s.chunks:
                written += len(chunk)
                if written > size:
                    raise EndlessDataError(f"{where}: the registry sent more than the {size} bytes the signed index states; "
                                         "download cut off (endless data)", "the registry is misbehaving; nothing was cached")
                fh.write(chunk)
                if bar is not None:
                    bar.update(len(chunk))
            fh.flush()
            os.fsync(fh.fileno())
    if written != size:
        raise IntegrityError(f"{where}: got {written} bytes, the signed index states {size}",
                             "the download was truncated; run the command again")


def fetch(reg: Registry, name: str, entry: IndexEntry, trust: TrustStore, *,
          repaired: list[str] | None = None) -> Fetched:
    """Return the cached, verified artifact, or download and verify it into staging.

    A damaged cache entry is removed (confirmed) and downloaded again; `repaired`, when given,
    collects a line saying so, since a silently altered local copy deserves a warning.
    Trust failures are not retried.
    """
    try:
        cached = verify_cached(name, entry, trust)
    except IntegrityError as exc:
        with file_lock(_entry_lock(name, entry.commit)):
            _clear(entry_dir(name, entry.commit))
        if repaired is not None:
            repaired.append(f"the cached copy of {name}@{entry.version} had been altered ({exc.message}); "
                            "it was removed and downloaded again")
        cached = None
    if cached is not None:
        return Fetched(name, entry, cached.path, cached, staged=False, trust=trust)
    if entry.total_size > MAX_ARTIFACT_BYTES:
        raise IntegrityError(f"{name}@{entry.version}: the index states {entry.total_size} bytes, over the "
                             f"{MAX_ARTIFACT_BYTES}-byte artifact limit", "this is not a patch; refusing it")
    if not entry.files:
        raise NotFoundError(f"{name}@{entry.version}: the index lists no files", "ask the publisher to republish it")
    staging = new_staging()
    where = f"{reg.url} {name}@{entry.version}"
    try:
        with _progress(entry.total_size, f"{name}@{entry.version}") as bar:
            for fname, size in sorted(entry.files.items()):
                _download_file(reg, name, entry, fname, size, confined(staging, fname, what="download"), bar)
        try:
            result = verify_artifact(staging, trust)
        except PatchkitError as exc:
            # Say which download failed, not which private staging directory it sat in.
            raise type(exc)(exc.message.replace(str(staging), f"the download of {where}"), exc.hint) from None
        check_matches(result, name, entry, where)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Fetched(name, entry, staging, result, staged=True, trust=trust)


# -- `patchkit cache list|verify|clean` -----------------------------------------------------------


@dataclass
class CacheEntry:
    name: str
    commit: str
    path: Path
    bytes: int
    version: str | None = None
    ok: bool | None = None
    reason: str = ""
    error: str | None = None  # the failure's kind ("integrity", "trust", …), as in `--json` errors
    exit_code: int | None = None  # the failure's exit code: 3 altered, 4 signer no longer trusted, …

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "commit": self.commit, "path": str(self.path), "bytes": self.bytes,
                "version": self.version, "ok": self.ok, "reason": self.reason, "error": self.error,
                "exit_code": self.exit_code}


def list_entries() -> list[CacheEntry]:
    """Every entry under the cache root that has the shape NS/NAME/<commit>."""
    from patchkit._internal.files import read_regular
    from patchkit.manifest import parse_manifest
    from patchkit.registry.ids import is_commit_id

    root = cache_root()
    out: list[CacheEntry] = []
    if not is_real_dir(root):
        return out
    for ns in sorted(os.listdir(root)):
        if ns.startswith(".") or not is_real_dir(root / ns):
            continue
        for short in sorted(os.listdir(root / ns)):
            if not is_real_dir(root / ns / short):
                continue
            for commit in sorted(os.listdir(root / ns / short)):
                path = root / ns / short / commit
                if not is_commit_id(commit):
                    continue
                size = sum(os.lstat(path / f).st_size for f in os.listdir(path)) if is_real_dir(path) else os.lstat(path).st_size
                entry = CacheEntry(f"{ns}/{short}", commit, path, size)
                try:
                    entry.version = parse_manifest(read_regular(path / constants.MANIFEST_FILE, 16 << 20)).version
                except (PatchkitError, OSError):
                    entry.version = None
                out.append(entry)
    return out


def verify_entries(trust: TrustStore) -> list[CacheEntry]:
    """Re-verify every entry: signature, trust, files, and that it holds the patch its path names."""
    entries = list_entries()
    for e in entries:
        try:
            if not is_real_dir(e.path):
                raise IntegrityError(f"{e.path} is not a directory", "`patchkit cache clean` removes it")
            result = verify_artifact(e.path, trust)
            if result.name != e.name:
                raise MixAndMatchError(f"{e.path} holds {result.name}, not {e.name}", "`patchkit cache clean` removes it")
            e.ok, e.version = True, result.version
        except PatchkitError as exc:
            e.ok, e.reason, e.error, e.exit_code = False, exc.one_line(), exc.kind, exc.exit_code
    return entries


def verify_exit_code(entries: list[CacheEntry]) -> int:
    """`cache verify`'s exit code: 0 when all verify; 3 if any copy was altered or damaged; else 4 if a
    signer is no longer trusted (revoked, handed over, out of scope or removed); else the first failure's."""
    codes = [e.exit_code or 1 for e in entries if e.ok is False]
    if not codes:
        return 0
    if IntegrityError.exit_code in codes:
        return IntegrityError.exit_code
    if TrustError.exit_code in codes:
        return TrustError.exit_code
    return codes[0]


def clean(trust: TrustStore, *, everything: bool = False) -> list[CacheEntry]:
    """Remove leftover staging and every entry that does not verify (or, with `everything`, all)."""
    removed: list[CacheEntry] = []
    staging = cache_root() / ".staging"
    if is_real_dir(staging):
        _sweep_staging(staging)
    for e in verify_entries(trust) if not everything else list_entries():
        if everything or e.ok is False:
            with file_lock(_entry_lock(e.name, e.commit)):
                _clear(e.path)
            removed.append(e)
    return removed


__all__ = ["CacheEntry", "Fetched", "cache_root", "check_matches", "clean", "entry_dir", "fetch", "list_entries",
           "verify_cached", "verify_entries", "verify_exit_code"]
