"""Which files hold a model's weights: the index's shards, or every top-level `*.safetensors`."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from patchkit._internal.files import read_regular
from patchkit._internal.jsonio import loads_strict
from patchkit._internal.tensors import PICKLE_HINT, PICKLE_SUFFIXES
from patchkit.errors import InvalidInputError

SAFETENSORS_INDEX = "model.safetensors.index.json"
# Big enough for the weight map of any real model, small enough to refuse garbage early.
MAX_INDEX_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class WeightFile:
    """One weights file: `name` as the model directory lists it, `real` after symlinks."""

    name: str
    path: Path
    real: Path
    st: os.stat_result


@dataclass(frozen=True)
class Discovery:
    model_dir: Path
    files: tuple[WeightFile, ...]
    index: WeightFile | None
    weight_map: dict[str, str] | None


def _stat_file(model_dir: Path, name: str) -> WeightFile:
    path = model_dir / name
    try:
        st = os.stat(path)  # follows symlinks: the HF cache points snapshots into blobs/
    except FileNotFoundError:
        if os.path.islink(path):
            raise InvalidInputError(
                f"{path} is a broken symlink (its target {os.readlink(path)!r} is missing)",
                "re-download the model; in the Hugging Face cache the blob it points to is gone",
            ) from None
        raise InvalidInputError(f"{path} does not exist", "re-download the model or fix its index") from None
    except OSError as exc:
        raise InvalidInputError(f"cannot read {path}: {exc.strerror}", "check the path and permissions") from None
    if not stat.S_ISREG(st.st_mode):
        raise InvalidInputError(f"{path} is not a regular file", "weights must be plain files (or symlinks to them)")
    return WeightFile(name, path, Path(os.path.realpath(path)), st)


def _safe_relative(name: object, index_path: Path) -> str:
    """An index entry must name a file inside the model directory, never outside it."""
    if not isinstance(name, str) or not name or "\\" in name or "\x00" in name:
        raise InvalidInputError(f"{index_path}: invalid shard name {name!r}", "the index is corrupt")
    pure = PurePosixPath(name)
    if pure.is_absolute() or any(part in ("..", "") for part in pure.parts) or name != pure.as_posix():
        raise InvalidInputError(
            f"{index_path}: shard {name!r} points outside the model directory",
            "the index must name files inside the model directory",
        )
    return name


def _read_index(model_dir: Path) -> tuple[WeightFile, dict[str, str]]:
    index = _stat_file(model_dir, SAFETENSORS_INDEX)
    if index.st.st_size > MAX_INDEX_BYTES:
        raise InvalidInputError(f"{index.path} is {index.st.st_size} bytes, too large for an index", "the index is corrupt")
    try:
        raw = read_regular(index.path, MAX_INDEX_BYTES, follow_symlinks=True)
    except FileNotFoundError:
        raise InvalidInputError(f"{index.path} disappeared while being read", "retry once nothing writes to it") from None
    obj = loads_strict(raw, what=str(index.path))
    weight_map = obj.get("weight_map") if isinstance(obj, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise InvalidInputError(
            f"{index.path} has no weight_map", "the index is corrupt; re-download it or remove it"
        )
    clean: dict[str, str] = {}
    for tensor, shard in weight_map.items():
        clean[tensor] = _safe_relative(shard, index.path)
    return index, clean


def discover(model_dir: Path) -> Discovery:
    """Find the weights of `model_dir` (a directory, or one `.safetensors` file)."""
    model_dir = Path(model_dir)
    if model_dir.is_file():
        # A single safetensors file is a one-file model.
        one = _stat_file(model_dir.parent, model_dir.name)
        return Discovery(model_dir.parent, (one,), None, None)
    if not model_dir.exists():
        raise InvalidInputError(f"model directory {model_dir} does not exist", "check the path")
    if not model_dir.is_dir():
        raise InvalidInputError(f"{model_dir} is not a directory or a file", "pass a model directory")
    try:
        names = sorted(os.listdir(model_dir))
    except OSError as exc:
        raise InvalidInputError(f"cannot list {model_dir}: {exc.strerror}", "check permissions") from None

    if SAFETENSORS_INDEX in names:
        index, weight_map = _read_index(model_dir)
        files = tuple(_stat_file(model_dir, name) for name in sorted(set(weight_map.values())))
        return Discovery(model_dir, files, index, weight_map)

    weights = [n for n in names if n.endswith(".safetensors") and not n.startswith(".")]
    if weights:
        return Discovery(model_dir, tuple(_stat_file(model_dir, n) for n in weights), None, None)

    pickles = [n for n in names if n.lower().endswith(PICKLE_SUFFIXES)]
    if pickles:
        shown = ", ".join(pickles[:3]) + (", ..." if len(pickles) > 3 else "")
        raise InvalidInputError(
            f"{model_dir} holds only pickle weights ({shown}); patchkit reads safetensors only",
            PICKLE_HINT,
        )
    raise InvalidInputError(
        f"no weights in {model_dir}: no *.safetensors files and no {SAFETENSORS_INDEX}",
        "point at a Hugging Face model directory that holds safetensors weights",
    )
