"""The routing gate of a gated patch, as bytes: its file, its record, and the checks on both.

A gated patch carries a linear probe (`gate.safetensors`: one float32 vector of the base model's
hidden size) and, in its signed manifest, the layer, bias and threshold that go with it. The
runtime applies the prefix only to prompts whose probe logit is above the threshold
(`patchkit.runtime.gate`). Torch-free: `verify` checks a gate without loading anything.

A `patchkit train` output (a `patchkit build` SOURCE) holds the same vector and a `gate.json`
record; `build` carries both into the artifact, where the manifest's `gate` entry pins the
vector by sha256, so the signature covers it.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from patchkit import constants
from patchkit._internal.files import read_regular
from patchkit._internal.jsonio import loads_strict
from patchkit._internal.tensors import all_finite, parse_header_bytes, serialize
from patchkit.errors import CompatibilityError, IntegrityError, InvalidInputError
from patchkit.manifest import GateInfo

# A hidden size of a million float32 values is far past any model; a file claiming more is refused unread.
MAX_GATE_BYTES = 4 * 1024 * 1024 + 1024 * 1024
MAX_GATE_RECORD_BYTES = 256 * 1024
GATE_FIT = "logistic-l2-lbfgs-standardised-v1"


@dataclass(frozen=True)
class GateTensor:
    """A validated [hidden] float32 probe weight, as raw little-endian bytes."""

    data: bytes

    @property
    def size(self) -> int:
        return len(self.data) // 4

    @property
    def sha256(self) -> str:
        """The file's sha256 (what the manifest pins), not the raw vector's."""
        return hashlib.sha256(self.file_bytes()).hexdigest()

    def file_bytes(self) -> bytes:
        return serialize({constants.GATE_KEY: ("F32", (self.size,), self.data)}, metadata={"format": "pt"})


def parse_gate_file(raw: bytes, source: str, *, hidden_size: int | None = None) -> GateTensor:
    """Exactly one finite 1-D F32 tensor named `gate_weight`, of the model's hidden size when given."""
    header = parse_header_bytes(raw, len(raw), Path(source), max_header=64 * 1024)
    if len(header.tensors) != 1:
        raise InvalidInputError(f"{source} holds {len(header.tensors)} tensors; a gate is exactly one vector",
                                "rebuild the patch with `patchkit build`")
    t = header.tensors[0]
    if t.name != constants.GATE_KEY or t.dtype != "F32" or len(t.shape) != 1 or t.shape[0] == 0:
        raise InvalidInputError(f"{source}: expected one F32 vector named {constants.GATE_KEY!r}, got {t.name!r} {t.dtype} "
                                f"{list(t.shape)}", "rebuild the patch with `patchkit build`")
    if hidden_size is not None and t.shape[0] != hidden_size:
        raise InvalidInputError(f"{source}: the gate has {t.shape[0]} values but the base model's hidden size is {hidden_size}",
                                "fit the gate on the base model the patch is for")
    data = raw[t.begin : t.end]
    if not all_finite("F32", data):
        raise InvalidInputError(f"{source}: the gate holds NaN or Inf values", "fit the gate again")
    return GateTensor(data)


def check_gate_file(files: dict[str, bytes], info: GateInfo, hidden_size: int, where: str) -> GateTensor:
    """`verify`'s check: the file the manifest names is there, is a valid vector, and is the one it pins."""
    raw = files.get(info.file)
    if raw is None:
        raise IntegrityError(f"{where}: the manifest lists a gate but {info.file} is missing", "re-pull or rebuild the patch")
    gate = parse_gate_file(raw, f"{where}/{info.file}", hidden_size=hidden_size)
    if hashlib.sha256(raw).hexdigest() != info.sha256:
        raise IntegrityError(f"{where}/{info.file} does not match the manifest's gate.sha256", "re-pull or rebuild the patch")
    return gate


def read_gate(path: Path, info: GateInfo, hidden_size: int) -> GateTensor:
    """Read a verified artifact's gate once more, tied to the signed manifest by sha256."""
    file = Path(path) / info.file
    try:
        raw = read_regular(file, MAX_GATE_BYTES, error=IntegrityError)
    except FileNotFoundError:
        raise IntegrityError(f"{file} is missing", "re-pull or rebuild the patch") from None
    return check_gate_file({info.file: raw}, info, hidden_size, str(path))


def _number(record: dict[str, Any], key: str, where: str) -> float:
    v = record.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise InvalidInputError(f"{where}: {key} must be a finite number", "fit the gate again (`patchkit gate`)")
    return float(v)


def read_gate_source(source: Path, hidden_size: int, base_digest: str | None = None) -> tuple[GateTensor, GateInfo] | None:
    """The gate of a training output directory (`gate.safetensors` + `gate.json`), or None when it has none.

    One file without the other is refused: a half-written gate must not become half a patch. A
    gate fitted on another base model than `base_digest` is refused too: its probe reads that
    model's hidden states.
    """
    source = Path(source)
    tensor, record = source / constants.GATE_FILE, source / constants.GATE_RECORD_FILE
    if not tensor.exists() and not record.exists():
        return None
    if not (tensor.exists() and record.exists()):
        have, lack = (tensor, record) if tensor.exists() else (record, tensor)
        raise InvalidInputError(f"{source} holds {have.name} but not {lack.name}", "fit the gate again with `patchkit gate`")
    try:
        raw = read_regular(tensor, MAX_GATE_BYTES, follow_symlinks=True)
        rec = loads_strict(read_regular(record, MAX_GATE_RECORD_BYTES, follow_symlinks=True), what=str(record))
    except OSError as exc:
        raise InvalidInputError(f"cannot read the gate in {source}: {exc}", "fit the gate again with `patchkit gate`") from None
    gate = parse_gate_file(raw, str(tensor), hidden_size=hidden_size)
    if not isinstance(rec, dict):
        raise InvalidInputError(f"{record} must hold a JSON object", "fit the gate again with `patchkit gate`")
    if rec.get("sha256") != gate.sha256:
        raise InvalidInputError(f"{record} was written for another {constants.GATE_FILE}", "fit the gate again with `patchkit gate`")
    fitted_on = rec.get("base_digest")
    if base_digest is not None and isinstance(fitted_on, str):
        from patchkit.basemodel.fingerprint import digests_equal, parse_digest

        # Two algorithms cannot be compared without the weights; `build --base-model` uses the same one as `gate`.
        if parse_digest(fitted_on)[0] == parse_digest(base_digest)[0] and not digests_equal(fitted_on, base_digest):
            raise CompatibilityError(f"the gate in {source} was fitted on base {fitted_on}, not {base_digest}",
                                     "fit the gate on the base model the patch is built for (`patchkit gate`)")
    layer = rec.get("layer")
    if isinstance(layer, bool) or not isinstance(layer, int) or layer < 1:
        raise InvalidInputError(f"{record}: layer must be a positive integer", "fit the gate again with `patchkit gate`")
    stats = rec.get("stats")
    try:
        info = GateInfo(sha256=gate.sha256, layer=layer, bias=_number(rec, "bias", str(record)),
                        threshold=_number(rec, "threshold", str(record)),
                        recall_target=_number(rec, "recall_target", str(record)),
                        fit=str(rec.get("fit", GATE_FIT)), stats=stats if isinstance(stats, dict) else {})
    except ValueError as exc:
        raise InvalidInputError(f"{record}: {str(exc).splitlines()[0]}", "fit the gate again with `patchkit gate`") from None
    return gate, info


__all__ = ["GATE_FIT", "GateTensor", "check_gate_file", "parse_gate_file", "read_gate", "read_gate_source"]
