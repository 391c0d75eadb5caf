"""The base-model fingerprint: a content digest of a model's tensors.

It is what ties a patch to the weights it was trained for. It does not change with sharding,
file names, file order, tensor order or safetensors metadata, and it needs neither torch nor
numpy. See `patchkit.basemodel._fingerprint` for the exact digest format.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from patchkit import constants
from patchkit.basemodel._fingerprint import cache
from patchkit.basemodel._fingerprint.digest import (
    ALGORITHMS,
    DEFAULT_ALGORITHM,
    check_algorithm,
    digests_equal,
    format_digest,
    is_digest,
    parse_digest,
)
from patchkit.basemodel._fingerprint.discover import Discovery, discover
from patchkit.basemodel._fingerprint.hashing import hash_layout
from patchkit.basemodel._fingerprint.reading import read_layout
from patchkit.errors import InvalidInputError

__all__ = [
    "ALGORITHMS",
    "DEFAULT_ALGORITHM",
    "PROGRESS_MIN_BYTES",
    "FingerprintResult",
    "digests_equal",
    "fingerprint",
    "fingerprint_details",
    "fingerprint_matches",
    "is_digest",
    "parse_digest",
]

# Models bigger than this show a progress bar (unless PATCHKIT_NO_PROGRESS is set).
PROGRESS_MIN_BYTES = 1_000_000_000


@dataclass(frozen=True)
class FingerprintResult:
    digest: str
    algorithm: str
    tensors: int
    bytes: int
    files: tuple[str, ...]
    cached: bool

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["files"] = list(self.files)
        return out


def fingerprint_details(
    model_dir: Path | str, *, algorithm: str = DEFAULT_ALGORITHM, use_cache: bool = True
) -> FingerprintResult:
    """Fingerprint `model_dir` (a model directory or one `.safetensors` file).

    Raises InvalidInputError for missing, pickle-only, truncated or malformed weights.
    """
    check_algorithm(algorithm)
    disc = discover(Path(model_dir))
    names = tuple(wf.name for wf in disc.files)
    if use_cache:
        hit = cache.lookup(disc, algorithm)
        if hit is not None:
            return FingerprintResult(hit.digest, algorithm, hit.tensors, hit.bytes, names, cached=True)

    started = time.time_ns()
    layout = read_layout(disc)
    progress = layout.bytes > PROGRESS_MIN_BYTES and not constants.no_progress()
    digest = format_digest(algorithm, hash_layout(layout, algorithm, progress=progress))
    _check_unchanged(disc)
    result = FingerprintResult(digest, algorithm, layout.tensors, layout.bytes, names, cached=False)
    if use_cache:
        cache.store(disc, algorithm, cache.CachedFingerprint(digest, layout.tensors, layout.bytes), started_ns=started)
    return result


def _check_unchanged(disc: Discovery) -> None:
    """A file rewritten mid-hash would give a digest of no real state: refuse it."""
    for wf in disc.files:
        try:
            st = os.stat(wf.path)
        except OSError:
            st = None
        if st is None or (st.st_ino, st.st_size, st.st_mtime_ns) != (wf.st.st_ino, wf.st.st_size, wf.st.st_mtime_ns):
            raise InvalidInputError(f"{wf.path} changed while being fingerprinted", "retry once nothing writes to it")


def fingerprint(model_dir: Path | str, *, algorithm: str = DEFAULT_ALGORITHM, use_cache: bool = True) -> str:
    """The digest string, e.g. `pk-tensors-blake3-v1:<64 hex>`."""
    return fingerprint_details(model_dir, algorithm=algorithm, use_cache=use_cache).digest


def fingerprint_matches(model_dir: Path | str, expected_digest: str, *, use_cache: bool = True) -> bool:
    """Recompute with the expected digest's own algorithm, so either kind of digest verifies."""
    algorithm, _ = parse_digest(expected_digest)
    actual = fingerprint(model_dir, algorithm=algorithm, use_cache=use_cache)
    return digests_equal(actual, expected_digest)
