"""Hash every tensor straight from an mmap, in parallel threads, and fold the lines into a root.

Both hashers release the GIL on large buffers, so a thread pool scales across cores; blake3
also threads inside one large tensor (an embedding matrix can be most of a model).
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from typing import Protocol

import blake3

from patchkit._internal.tensors import TensorInfo
from patchkit.basemodel._fingerprint.discover import WeightFile
from patchkit.basemodel._fingerprint.reading import ModelLayout
from patchkit.errors import InvalidInputError

ROOT_DOMAIN = b"pk-tensors-v1\n"
# Tensors at least this big let blake3 spread one tensor over every core.
THREADED_MIN_BYTES = 16 * 1024 * 1024
# Feed the hasher this much at a time, so a progress bar moves inside huge tensors.
CHUNK_BYTES = 256 * 1024 * 1024


class _Hasher(Protocol):
    def update(self, data: memoryview, /) -> object: ...
    def hexdigest(self) -> str: ...


def _new_hasher(algorithm: str, nbytes: int) -> _Hasher:
    if algorithm == "blake3":
        if nbytes >= THREADED_MIN_BYTES:
            return blake3.blake3(max_threads=blake3.blake3.AUTO)
        return blake3.blake3()
    if algorithm == "sha256":
        return hashlib.sha256()
    raise ValueError(algorithm)  # callers check the algorithm first


def tensor_line(name: str, dtype: str, shape: tuple[int, ...], hex_digest: str) -> str:
    return json.dumps([name, dtype, list(shape), hex_digest], separators=(",", ":"), ensure_ascii=True)


def root_digest(algorithm: str, lines: list[str]) -> str:
    h = _new_hasher(algorithm, 0)
    h.update(memoryview(ROOT_DOMAIN))
    h.update(memoryview("".join(line + "\n" for line in sorted(lines)).encode("ascii")))
    return h.hexdigest()


def _workers() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(n, 32))


@contextmanager
def _mapped(wf: WeightFile) -> Iterator[mmap.mmap]:
    """Map a file read-only, refusing it if it is not the file whose header we checked."""
    try:
        fd = os.open(wf.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise InvalidInputError(f"cannot read {wf.path}: {exc.strerror}", "check the path and permissions") from None
    try:
        st = os.fstat(fd)
        if (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns) != (
            wf.st.st_ino,
            wf.st.st_dev,
            wf.st.st_size,
            wf.st.st_mtime_ns,
        ):
            raise InvalidInputError(f"{wf.path} changed while being fingerprinted", "retry once nothing writes to it")
        try:
            mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as exc:
            raise InvalidInputError(f"cannot map {wf.path}: {exc}", "check the file") from None
    finally:
        os.close(fd)  # the mapping keeps its own reference
    try:
        if hasattr(mmap, "MADV_SEQUENTIAL"):
            mm.madvise(mmap.MADV_SEQUENTIAL)
        yield mm
    finally:
        mm.close()


def _hash_tensor(mm: mmap.mmap, t: TensorInfo, algorithm: str, advance: Callable[[int], None]) -> str:
    h = _new_hasher(algorithm, t.nbytes)
    with memoryview(mm) as whole, whole[t.begin : t.end] as view:
        for off in range(0, len(view), CHUNK_BYTES):
            with view[off : off + CHUNK_BYTES] as part:
                h.update(part)
                advance(len(part))
    return h.hexdigest()


def hash_layout(layout: ModelLayout, algorithm: str, *, progress: bool) -> str:
    """The hex root over every tensor of `layout`."""
    bar = None
    lock = threading.Lock()
    if progress:
        import sys

        from tqdm import tqdm

        bar = tqdm(total=layout.bytes, unit="B", unit_scale=True, unit_divisor=1024, desc="fingerprint", file=sys.stderr)

    def advance(n: int) -> None:
        if bar is not None:
            with lock:
                bar.update(n)

    try:
        with ExitStack() as stack:
            jobs: list[tuple[mmap.mmap, TensorInfo]] = []
            for wf, header in layout.shards:
                if not header.tensors:
                    continue
                mm = stack.enter_context(_mapped(wf))
                jobs.extend((mm, t) for t in header.tensors)
            # Largest first, so the pool never ends waiting on one big tensor.
            jobs.sort(key=lambda job: job[1].nbytes, reverse=True)

            def one(job: tuple[mmap.mmap, TensorInfo]) -> str:
                mm, t = job
                return tensor_line(t.name, t.dtype, t.shape, _hash_tensor(mm, t, algorithm, advance))

            workers = min(_workers(), len(jobs)) or 1
            if workers == 1:
                lines = [one(job) for job in jobs]
            else:
                pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pk-fingerprint")
                try:
                    lines = list(pool.map(one, jobs))
                finally:
                    # On an error or Ctrl-C, drop the queued tensors instead of hashing them all.
                    pool.shutdown(wait=True, cancel_futures=True)
    finally:
        if bar is not None:
            bar.close()
    return root_digest(algorithm, lines)
