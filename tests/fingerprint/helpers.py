"""Torch-free builders for fingerprint tests: random tensors written as safetensors by hand."""

from __future__ import annotations

import json
import math
import os
import random
import struct
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from patchkit._internal.tensors import DTYPE_SIZES, serialize

Tensors = dict[str, tuple[str, tuple[int, ...], bytes]]
INDEX = "model.safetensors.index.json"


def random_tensors(seed: int = 0) -> Tensors:
    rng = random.Random(seed)
    specs: list[tuple[str, str, tuple[int, ...]]] = [
        ("model.embed_tokens.weight", "BF16", (64, 16)),
        ("model.layers.0.self_attn.q_proj.weight", "F32", (16, 16)),
        ("model.layers.0.mlp.up_proj.weight", "F16", (32, 16)),
        ("model.layers.0.input_layernorm.weight", "F32", (16,)),
        ("model.layers.1.self_attn.q_proj.weight", "BF16", (16, 16)),
        ("model.norm.weight", "F32", (16,)),
        ("model.step", "I64", ()),
        ("lm_head.weight", "BF16", (64, 16)),
    ]
    return {n: (d, s, rng.randbytes(math.prod(s) * DTYPE_SIZES[d])) for n, d, s in specs}


def raw_safetensors(
    tensors: Mapping[str, tuple[str, tuple[int, ...], bytes]],
    order: Sequence[str] | None = None,
    metadata: Mapping[str, str] | None = None,
    *,
    data_order: Sequence[str] | None = None,
) -> bytes:
    """Like `serialize`, but with a chosen header order and data layout order."""
    header: dict[str, object] = {}
    if metadata is not None:
        header["__metadata__"] = dict(metadata)
    offsets: dict[str, tuple[int, int]] = {}
    pos = 0
    blobs = []
    for name in data_order or list(tensors):
        data = tensors[name][2]
        offsets[name] = (pos, pos + len(data))
        pos += len(data)
        blobs.append(data)
    for name in order or list(tensors):
        dtype, shape, _ = tensors[name]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets[name])}
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + b"".join(blobs)


def write_header(path: Path, header: object, data: bytes = b"", *, claimed_len: int | None = None) -> Path:
    raw = json.dumps(header).encode()
    n = len(raw) if claimed_len is None else claimed_len
    path.write_bytes(struct.pack("<Q", n) + raw + data)
    return path


def write_model(
    out: Path,
    tensors: Tensors,
    *,
    shards: int = 1,
    index: bool | None = None,
    names: Sequence[str] | None = None,
    metadata: Mapping[str, str] | None = None,
    reverse_order: bool = False,
) -> Path:
    """Write `tensors` as a model directory; several shards get an index unless index=False."""
    out.mkdir(parents=True, exist_ok=True)
    keys = sorted(tensors)
    groups = [keys[k::shards] for k in range(shards)]
    fnames = list(names) if names else [
        "model.safetensors" if shards == 1 else f"model-{k + 1:05d}-of-{shards:05d}.safetensors" for k in range(shards)
    ]
    weight_map: dict[str, str] = {}
    for fname, group in zip(fnames, groups, strict=True):
        part = {n: tensors[n] for n in group}
        if reverse_order or metadata is not None:
            order = list(reversed(group)) if reverse_order else group
            blob = raw_safetensors(part, order, metadata, data_order=order)
        else:
            blob = serialize(part)
        (out / fname).write_bytes(blob)
        weight_map.update(dict.fromkeys(group, fname))
    if index if index is not None else shards > 1:
        (out / INDEX).write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    return out


def age(path: Path, seconds: float = 60.0) -> None:
    """Move mtimes into the past, out of the cache's racy window (follows symlinks)."""
    when = time.time() - seconds
    targets = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    for p in targets:
        os.utime(p, (when, when))
