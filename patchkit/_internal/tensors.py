"""A safetensors reader and writer with no torch or numpy, hardened against hostile files.

The header is untrusted input: every offset, size and shape is checked before use.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import stat
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from patchkit._internal.jsonio import loads_strict
from patchkit.errors import InvalidInputError

DTYPE_SIZES: dict[str, int] = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
    "C64": 8,
}
FLOAT_DTYPES = frozenset({"F16", "BF16", "F32", "F64"})
# The floating dtypes as torch names them (`getattr(torch, name)`), the one map patchkit keeps.
TORCH_DTYPE_NAMES = {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64"}
# Largest header we will parse at all (the format itself caps it at 100 MB).
MAX_HEADER_BYTES = 100 * 1024 * 1024
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
PICKLE_HINT = (
    "pickle weights can run code when loaded; convert them to safetensors, e.g. "
    "`python -c \"import torch; from safetensors.torch import save_file; "
    "save_file(torch.load('model.bin', weights_only=True), 'model.safetensors')\"`, "
    "or load with transformers and call save_pretrained(..., safe_serialization=True)"
)


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int  # absolute file offset
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


@dataclass(frozen=True)
class Header:
    path: Path
    header_len: int
    data_start: int
    file_size: int
    tensors: tuple[TensorInfo, ...]
    metadata: dict[str, str]


def _is_pickle(head: bytes) -> bool:
    # Zip (torch.save) or a raw pickle protocol marker.
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def parse_header_bytes(prefix: bytes, file_size: int, path: Path, *, max_header: int = MAX_HEADER_BYTES) -> Header:
    """Validate a header given the file's first bytes (at least 8 + header length)."""
    where = str(path)
    if file_size < 8 or len(prefix) < 8:
        if _is_pickle(prefix):
            raise InvalidInputError(f"{where} is a pickle file, not safetensors", PICKLE_HINT)
        raise InvalidInputError(f"{where} is truncated: shorter than a safetensors header", "re-download or re-export the file")
    (n,) = struct.unpack("<Q", prefix[:8])
    if n > max_header:
        if _is_pickle(prefix):
            raise InvalidInputError(f"{where} is a pickle file, not safetensors", PICKLE_HINT)
        raise InvalidInputError(
            f"{where}: safetensors header claims {n} bytes, over the {max_header}-byte limit",
            "the file is corrupt or not safetensors",
        )
    if 8 + n > file_size:
        raise InvalidInputError(
            f"{where}: safetensors header ({n} bytes) is longer than the file ({file_size} bytes)",
            "the file is truncated or corrupt",
        )
    if len(prefix) < 8 + n:
        raise InvalidInputError(f"{where}: could not read the whole header", "the file is truncated")
    raw = prefix[8 : 8 + n]
    obj = loads_strict(raw, what=f"{where} header")
    if not isinstance(obj, dict):
        raise InvalidInputError(f"{where}: safetensors header is not a JSON object", "the file is corrupt")
    data_start = 8 + n
    data_size = file_size - data_start
    metadata: dict[str, str] = {}
    tensors: list[TensorInfo] = []
    for name, spec in obj.items():
        if name == "__metadata__":
            if not isinstance(spec, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in spec.items()):
                raise InvalidInputError(f"{where}: __metadata__ must map strings to strings", "the file is corrupt")
            metadata = dict(spec)
            continue
        tensors.append(_tensor(where, name, spec, data_start, data_size))
    ordered = sorted(tensors, key=lambda t: (t.begin, t.end))
    for a, b in itertools.pairwise(ordered):
        if b.begin < a.end:
            raise InvalidInputError(
                f"{where}: tensors {a.name!r} and {b.name!r} overlap in the file",
                "the header lies about offsets; the file is corrupt or malicious",
            )
    return Header(path, n, data_start, file_size, tuple(tensors), metadata)


def _tensor(where: str, name: str, spec: Any, data_start: int, data_size: int) -> TensorInfo:
    if not isinstance(spec, dict):
        raise InvalidInputError(f"{where}: entry {name!r} is not an object", "the file is corrupt")
    dtype, shape, offsets = spec.get("dtype"), spec.get("shape"), spec.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPE_SIZES:
        raise InvalidInputError(f"{where}: tensor {name!r} has unknown dtype {dtype!r}", "the file is corrupt")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise InvalidInputError(f"{where}: tensor {name!r} has an invalid shape {shape!r}", "the file is corrupt")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
    ):
        raise InvalidInputError(f"{where}: tensor {name!r} has invalid data_offsets {offsets!r}", "the file is corrupt")
    begin, end = offsets
    if begin < 0 or end < begin:
        raise InvalidInputError(f"{where}: tensor {name!r} has negative or reversed offsets", "the file is corrupt")
    if end > data_size:
        raise InvalidInputError(
            f"{where}: tensor {name!r} points past the end of the file ({end} > {data_size} data bytes)",
            "the file is truncated or its header lies about offsets",
        )
    expected = math.prod(shape) * DTYPE_SIZES[dtype]
    if end - begin != expected:
        raise InvalidInputError(
            f"{where}: tensor {name!r} spans {end - begin} bytes but shape {shape} of {dtype} needs {expected}",
            "the header lies about offsets; the file is corrupt",
        )
    return TensorInfo(name, dtype, tuple(shape), data_start + begin, data_start + end)


def read_header(path: Path, *, max_header: int = MAX_HEADER_BYTES) -> Header:
    """Read and validate the header of a safetensors file on disk."""
    path = Path(path)
    try:
        # O_NONBLOCK: a FIFO swapped in after the type check must not hang the read.
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC), "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise InvalidInputError(f"{path} is not a regular file", "weights must be plain files (or symlinks to them)")
            size = fh.seek(0, 2)
            fh.seek(0)
            first = fh.read(8)
            if len(first) == 8:
                (n,) = struct.unpack("<Q", first)
                if n <= max_header and 8 + n <= size:
                    first += fh.read(n)
    except IsADirectoryError:
        raise InvalidInputError(f"{path} is a directory, not a safetensors file", "pass the .safetensors file") from None
    except FileNotFoundError:
        raise InvalidInputError(f"{path} does not exist", "check the path") from None
    except OSError as exc:
        raise InvalidInputError(f"cannot read {path}: {exc.strerror}", "check the path and permissions") from None
    return parse_header_bytes(first, size, path, max_header=max_header)


_FINITE_MASKS: dict[str, int] = {"F16": 0x7C00, "BF16": 0x7F80, "F32": 0x7F800000, "F64": 0x7FF0000000000000}
# The top byte of each element holds the sign and the exponent's high bits: a table says, per
# byte value, whether those bits are all ones. For F16 that settles it; for the wider types it
# marks the only elements that can be Inf or NaN (beyond about 1.7e38), which get the bit test.
_WIDE_TOP_BYTE = bytes(int(b & 0x7F == 0x7F) for b in range(256))
_TOP_BYTE_TABLES: dict[str, bytes] = {
    "F16": bytes(int(b & 0x7C == 0x7C) for b in range(256)),
    "BF16": _WIDE_TOP_BYTE,
    "F32": _WIDE_TOP_BYTE,
    "F64": _WIDE_TOP_BYTE,
}


def all_finite(dtype: str, data: bytes) -> bool:
    """True when no element is NaN or Inf: the exponent bits are never all ones.

    A patch is checked on every `verify`, so the common case runs in C: one table lookup per
    element's top byte (little-endian, as safetensors stores it), and the exact bit test only
    when a top byte could belong to an Inf or a NaN.
    """
    size = DTYPE_SIZES[dtype]
    raw = memoryview(data)
    if 1 not in bytes(raw[size - 1 :: size]).translate(_TOP_BYTE_TABLES[dtype]):
        return True
    return dtype != "F16" and _all_finite_bits(dtype, raw)


def _all_finite_bits(dtype: str, raw: memoryview) -> bool:
    mask = _FINITE_MASKS[dtype]
    size = DTYPE_SIZES[dtype]
    return not any(int.from_bytes(raw[i : i + size], "little") & mask == mask for i in range(0, len(raw) - size + 1, size))


def serialize(tensors: Mapping[str, tuple[str, tuple[int, ...], bytes]], metadata: Mapping[str, str] | None = None) -> bytes:
    """Encode raw tensors as a safetensors file (header padded to 8 bytes, like the reference)."""
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    blobs: list[bytes] = []
    for name in sorted(tensors):
        dtype, shape, data = tensors[name]
        if len(data) != math.prod(shape) * DTYPE_SIZES[dtype]:
            raise InvalidInputError(f"tensor {name!r}: {len(data)} bytes do not fit shape {shape} of {dtype}")
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + b"".join(blobs)
