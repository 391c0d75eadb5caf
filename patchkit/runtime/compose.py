"""Load-time composition: the ordered patches' tensors become one prefix, first patch first.

The checks (shared hidden size and base, token budget) live in `resolve.check_composable`, so
they run before the model loads; here the tensors are only decoded and concatenated.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from patchkit._internal.tensors import TORCH_DTYPE_NAMES
from patchkit.artifact.layout import PrefixTensor
from patchkit.runtime.resolve import LoadedPatch, check_composable

__all__ = ["check_composable", "compose_prefix", "prefix_tensor"]


def prefix_tensor(p: PrefixTensor) -> torch.Tensor:
    """Decode little-endian safetensors bytes into a [tokens, hidden] tensor (a private copy)."""
    flat = torch.frombuffer(bytearray(p.data), dtype=getattr(torch, TORCH_DTYPE_NAMES[p.dtype]))
    return flat.view(p.shape).clone()


def compose_prefix(patches: Sequence[LoadedPatch], *, dtype: torch.dtype, device: torch.device | str = "cpu") -> torch.Tensor | None:
    """cat(prefix_1, …, prefix_n) in the order given; None when there are no patches."""
    if not patches:
        return None
    return torch.cat([prefix_tensor(p.prefix).to(device=device, dtype=dtype) for p in patches], dim=0)
