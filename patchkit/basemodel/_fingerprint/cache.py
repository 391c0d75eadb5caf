"""The fingerprint cache: one small JSON file per (weights files' identity, algorithm).

The file name is a hash of every weight file's (real path, size, mtime_ns, ctime_ns, inode,
device) plus the index's and the algorithm, so a warm check is a few `stat` calls and one small
read. Entries are written atomically; anything unreadable is a miss and gets rewritten.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from patchkit import constants
from patchkit._internal.files import atomic_write_text, file_lock
from patchkit._internal.jsonio import loads_strict
from patchkit.basemodel._fingerprint.digest import parse_digest
from patchkit.basemodel._fingerprint.discover import Discovery, WeightFile
from patchkit.errors import ReadOnlyError

FORMAT = "patchkit-fingerprint-cache-v1"
MAX_ENTRY_BYTES = 1024 * 1024
MAX_ENTRIES = 512
# A file modified this recently may change again within the same timestamp tick without its
# mtime moving, so its digest is not cached yet (git's "racy" entries, same reasoning).
RACY_WINDOW_NS = 2_000_000_000


@dataclass(frozen=True)
class CachedFingerprint:
    digest: str
    tensors: int
    bytes: int


def cache_dir() -> Path:
    return constants.patchkit_home() / "fingerprints"


def _identity(wf: WeightFile) -> list[Any]:
    st = wf.st
    return [wf.name, str(wf.real), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


def cache_key(disc: Discovery, algorithm: str) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "algorithm": algorithm,
        "index": _identity(disc.index) if disc.index is not None else None,
        "files": [_identity(wf) for wf in disc.files],
    }


def entry_path(key: dict[str, Any]) -> Path:
    blob = json.dumps(key, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return cache_dir() / f"{hashlib.sha256(blob).hexdigest()[:40]}.json"


def lookup(disc: Discovery, algorithm: str) -> CachedFingerprint | None:
    """The cached result for exactly these files, or None (missing, stale or corrupt)."""
    key = cache_key(disc, algorithm)
    path = entry_path(key)
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_ENTRY_BYTES + 1)
        if len(raw) > MAX_ENTRY_BYTES:
            return None
        obj = loads_strict(raw, what="fingerprint cache entry")
        if not isinstance(obj, dict) or obj.get("key") != key:
            return None
        digest, tensors, nbytes = obj.get("digest"), obj.get("tensors"), obj.get("bytes")
        if not isinstance(digest, str) or parse_digest(digest)[0] != algorithm:
            return None
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (tensors, nbytes)):
            return None
    except Exception:  # a broken cache must never break a fingerprint: recompute instead
        return None
    assert isinstance(tensors, int) and isinstance(nbytes, int)
    return CachedFingerprint(digest, tensors, nbytes)


def is_racy(disc: Discovery, started_ns: int) -> bool:
    files = [*disc.files, *([disc.index] if disc.index is not None else [])]
    return any(wf.st.st_mtime_ns >= started_ns - RACY_WINDOW_NS for wf in files)


def store(disc: Discovery, algorithm: str, result: CachedFingerprint, *, started_ns: int | None = None) -> bool:
    """Record a result; False when it was not cached (racy files, or an unwritable home)."""
    started = time.time_ns() if started_ns is None else started_ns
    if is_racy(disc, started):
        return False
    key = cache_key(disc, algorithm)
    path = entry_path(key)
    payload = {"key": key, "digest": result.digest, "tensors": result.tensors, "bytes": result.bytes}
    try:
        with file_lock(path.parent / ".lock"):
            atomic_write_text(path, json.dumps(payload, sort_keys=True, indent=1) + "\n")
            _prune(path.parent, keep=path)
    except (OSError, ReadOnlyError):
        return False
    return True


def _prune(directory: Path, *, keep: Path) -> None:
    """Keep the cache bounded: drop the least recently written entries beyond MAX_ENTRIES."""
    entries = [p for p in directory.glob("*.json") if p != keep]
    if len(entries) < MAX_ENTRIES:
        return
    def mtime(p: Path) -> int:
        try:
            return p.stat().st_mtime_ns
        except OSError:
            return 0
    entries.sort(key=mtime)
    for old in entries[: len(entries) - MAX_ENTRIES + 1]:
        with contextlib.suppress(OSError):
            old.unlink()
