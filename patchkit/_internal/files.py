"""Atomic writes, bounded reads of regular files, confined paths and file locks.

Every write patchkit makes goes through here, and so does every read of a file that someone
else could have planted: a registry on a shared disk, an artifact, a cache entry, a lock or a
trust store. Those reads open with O_NOFOLLOW and O_NONBLOCK (a symlink, a FIFO or a device
never blocks or redirects us), accept regular files only, and stop at a byte bound.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from patchkit.errors import IntegrityError, InvalidInputError, PatchkitError, PathEscapeError, ReadOnlyError

_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
# One path component that patchkit itself builds from untrusted data (names, commits, files).
_COMPONENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")


def fsync_dir(path: Path) -> None:
    """Persist a rename: the directory entry must reach the disk too."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write via temp file, fsync, rename: a reader sees the old file or the new one."""
    path = Path(path)
    if mode is None:
        mode = 0o666 & ~_umask()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str, mode: int | None = None) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), mode=mode)


def make_staging_dir(final: Path) -> Path:
    """A temp directory beside `final`, so the closing rename stays on one filesystem."""
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    staging.chmod(0o777 & ~_umask())
    return staging


def fsync_tree(path: Path) -> None:
    for root, _dirs, files in os.walk(path):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(root))


def publish_dir(staging: Path, final: Path, *, replace: bool = False) -> None:
    """Move a fully written staging directory into place in one rename.

    With `replace`, an existing `final` is swapped out and removed only after the new one
    is visible; otherwise an existing `final` is left alone and staging is discarded.
    """
    fsync_tree(staging)
    if final.exists():
        if not replace:
            shutil.rmtree(staging, ignore_errors=True)
            return
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
        os.replace(staging, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, final)
    fsync_dir(final.parent)


@contextlib.contextmanager
def file_lock(path: Path, *, shared: bool = False) -> Iterator[None]:
    """An advisory lock (flock) that serializes writers across processes.

    The lock file is opened without following symlinks and must be a regular file: a planted
    `x.lock -> /etc/nologin` must not make us create or truncate the target.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InvalidInputError(f"lock file {path} is a symlink", "remove it; patchkit creates its own lock files") from None
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR):
            raise ReadOnlyError(f"cannot create lock file {path}: {exc.strerror}",
                                    "the directory is read-only; make it writable or point PATCHKIT_HOME elsewhere") from None
        raise InvalidInputError(f"cannot open lock file {path}: {exc.strerror}", "check the path and permissions") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InvalidInputError(f"lock file {path} is not a regular file", "remove it; patchkit creates its own lock files")
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def lock_for(target: Path) -> Path:
    """The advisory lock that guards `target`, kept under PATCHKIT_HOME rather than beside it.

    Beside the file, a lock would show up in the user's `git status`, fail on a read-only model
    directory, and could be planted as a symlink by a hostile checkout.
    """
    import hashlib

    from patchkit import constants

    real = os.path.realpath(os.path.abspath(target))
    return constants.patchkit_home() / "locks" / f"{hashlib.sha256(real.encode()).hexdigest()[:32]}.lock"


# -- reading files someone else may have planted ------------------------------------------------


def _describe(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device file"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a directory"
    return "not a regular file"


@contextlib.contextmanager
def open_regular(path: Path, *, what: str | None = None, error: type[PatchkitError] = InvalidInputError,
                 follow_symlinks: bool = False) -> Iterator[tuple[BinaryIO, int]]:
    """Open a regular file for reading, refusing symlinks, FIFOs and devices; yields (file, size).

    `follow_symlinks` is for model directories, where links are normal (the Hugging Face
    cache links snapshots to blobs); the target must still be a regular file. FileNotFoundError
    propagates, so callers keep their own "missing" message.
    """
    label = what or str(path)
    try:
        fd = os.open(path, _OPEN_FLAGS & ~os.O_NOFOLLOW if follow_symlinks else _OPEN_FLAGS)
    except FileNotFoundError:
        raise
    except NotADirectoryError:
        raise FileNotFoundError(errno.ENOENT, "a parent is not a directory", str(path)) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise error(f"{label} is a symlink", "patchkit reads only regular files here") from None
        if exc.errno == errno.EISDIR:
            raise error(f"{label} is a directory", "pass a file") from None
        raise error(f"cannot read {label}: {exc.strerror}", "check the path and permissions") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{label} is {_describe(st.st_mode)}", "patchkit reads only regular files here")
        os.set_blocking(fd, True)
        fh = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with fh:
        yield fh, st.st_size


def read_regular(path: Path, limit: int, *, what: str | None = None, error: type[PatchkitError] = InvalidInputError,
                 follow_symlinks: bool = False) -> bytes:
    """The bytes of a regular file of at most `limit` bytes (it may grow while we read: we stop)."""
    label = what or str(path)
    with open_regular(path, what=label, error=error, follow_symlinks=follow_symlinks) as (fh, size):
        if size > limit:
            raise error(f"{label} is {size} bytes, over the {limit}-byte limit", "this is not the file patchkit expects")
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise error(f"{label} grew past the {limit}-byte limit while being read", "this is not the file patchkit expects")
    return data


def is_real_dir(path: Path) -> bool:
    """A directory that is not a symlink (`Path.is_dir` follows links)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


# -- paths built from untrusted data -----------------------------------------------------------


def confined(root: Path, *parts: str, what: str = "path") -> Path:
    """`root/part/...`, proven to stay under `root` before anything is created or deleted there.

    Each part must be one plain component (no separator, no `..`, no leading dot), and no
    existing directory between root and the result may be a symlink. Anything else is an
    integrity failure: such a part only comes from a registry or index trying to escape.
    """
    for part in parts:
        if not isinstance(part, str) or not _COMPONENT_RE.match(part) or part in (".", ".."):
            raise PathEscapeError(f"refusing {what} component {part!r}: not a plain name",
                                 "the registry or index supplied a hostile path; nothing was changed")
    base = Path(os.path.abspath(root))
    out = base.joinpath(*parts)
    real_base = Path(os.path.realpath(base))
    cur = base
    for part in parts[:-1]:
        cur = cur / part
        if os.path.islink(cur):
            raise PathEscapeError(f"refusing {what}: {cur} is a symlink", "remove it; patchkit's directories hold no links")
    real_parent = Path(os.path.realpath(out.parent))
    if real_parent != real_base and real_base not in real_parent.parents:
        raise PathEscapeError(f"refusing {what} {out}: it resolves outside {base}", "nothing was changed")
    return out


def remove_confined(path: Path, root: Path) -> None:
    """Delete `path` (a directory, file or link) that lies under `root`, and confirm it is gone.

    A link is removed itself, never its target; a failure to remove is an error, never ignored,
    so a caller cannot go on to trust whatever is still there.
    """
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
    parts = Path(rel).parts
    confined(root, *parts, what="deletion")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    try:
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    except OSError as exc:
        raise IntegrityError(f"cannot remove {path}: {exc.strerror}",
                             f"remove it by hand (it is under {root}); it was not used") from None
    if os.path.lexists(path):
        raise IntegrityError(f"{path} still exists after removal", f"remove it by hand (it is under {root}); it was not used")
