"""The soft-prefix arithmetic that training, the runtime and the server must share.

A patch trained with one layout and served with another would be a different patch: these are
the single definitions of where the prefix goes (ahead of everything, BOS and left pads included),
what the mask says about it (ones), which positions each token gets (counted over the mask, so
left padding never shifts a row), and how transformers' cache argument and cache object are
reached across versions. `PrefixLM` (train) and `PatchedModel` (runtime) stay two classes,
because a trainable parameter and a frozen buffer with a KV cache are used differently.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch


def accepts_logits_to_keep(model: Any) -> bool:
    """Whether `model.forward` can compute only the last positions' logits (`logits_to_keep`)."""
    import inspect

    try:
        return "logits_to_keep" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def cache_kwarg(base: Any) -> str:
    """The name of the cache argument of `base.forward`: `cache` (transformers 5.2x) or `past_key_values`."""
    try:
        params = inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


def output_cache(out: Any) -> Any:
    """The cache a forward returned, under either name (None when the model kept none)."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


def cache_layers(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per-layer (keys, values) of a transformers cache, new (`.layers`) or legacy (tuples)."""
    layers = getattr(cache, "layers", None)
    if layers is not None:
        return [(layer.keys, layer.values) for layer in layers]
    return [(k, v) for k, v, *_ in cache]


def pad_rows(rows: Sequence[Sequence[int]], pad_id: int, *, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows as one (ids, attention mask) batch: padded on the left for prompts a model continues
    (their last tokens line up), on the right for continuations that follow a shared cache."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        where = slice(width - len(r), width) if left else slice(0, len(r))
        ids[i, where] = torch.tensor(list(r), dtype=torch.long)
        mask[i, where] = 1
    return ids, mask


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Position ids counted over the attended tokens only; 0 where the mask is 0.

    This is what transformers' `generate` does for a plain model, so a prompt gets the same
    positions alone or left-padded in a batch, with or without a prefix in front.
    """
    return (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)


def prefix_mask(attention_mask: torch.Tensor, tokens: int) -> torch.Tensor:
    """The [B, P+T] mask: ones for the P prefix tokens, then the input's own mask."""
    return torch.cat([attention_mask.new_ones(attention_mask.shape[0], tokens), attention_mask], dim=1)


def prepend_prefix(prefix: torch.Tensor, inputs_embeds: torch.Tensor) -> torch.Tensor:
    """cat(prefix, embeddings) for every row, in the embeddings' dtype and device (as PEFT does)."""
    p = prefix.to(device=inputs_embeds.device, dtype=inputs_embeds.dtype)
    return torch.cat([p.unsqueeze(0).expand(inputs_embeds.shape[0], -1, -1), inputs_embeds], dim=1)
