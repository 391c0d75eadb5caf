"""Read and cross-check every header before a single weight byte is hashed."""

from __future__ import annotations

from dataclasses import dataclass

from patchkit._internal.tensors import Header, TensorInfo, read_header
from patchkit.basemodel._fingerprint.discover import SAFETENSORS_INDEX, Discovery, WeightFile
from patchkit.errors import InvalidInputError


@dataclass(frozen=True)
class ModelLayout:
    """The validated weights: each file with its header, every tensor name unique."""

    shards: tuple[tuple[WeightFile, Header], ...]
    tensors: int
    bytes: int


def read_layout(disc: Discovery) -> ModelLayout:
    shards: list[tuple[WeightFile, Header]] = []
    owner: dict[str, str] = {}
    total = 0
    for wf in disc.files:
        header = read_header(wf.path)
        if header.file_size != wf.st.st_size:
            raise InvalidInputError(f"{wf.path} changed while being read", "retry once nothing is writing to it")
        for t in header.tensors:
            _claim(owner, t, wf, disc)
            total += t.nbytes
        shards.append((wf, header))
    if disc.weight_map is not None:
        missing = sorted(set(disc.weight_map) - set(owner))
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise InvalidInputError(
                f"{SAFETENSORS_INDEX} lists tensor {missing[0]!r}{more}, but no shard holds it",
                "the download is incomplete or the index is stale; re-download the model",
            )
    if not owner:
        where = ", ".join(wf.name for wf in disc.files)
        raise InvalidInputError(f"no tensors in {disc.model_dir} ({where} hold none)", "point at the model's weights")
    return ModelLayout(tuple(shards), len(owner), total)


def _claim(owner: dict[str, str], t: TensorInfo, wf: WeightFile, disc: Discovery) -> None:
    if t.name in owner:
        raise InvalidInputError(
            f"tensor {t.name!r} appears twice in {disc.model_dir}: in {owner[t.name]} and in {wf.name}",
            "a model must hold each tensor once; remove the stray file or fix the index",
        )
    if disc.weight_map is not None:
        listed = disc.weight_map.get(t.name)
        if listed != wf.name:
            where = f"lists it in {listed}" if listed is not None else "does not list it"
            raise InvalidInputError(
                f"tensor {t.name!r} is in {wf.name}, but the index {where}",
                "the index does not match the shards; re-download the model",
            )
    owner[t.name] = wf.name
