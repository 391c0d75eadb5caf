"""Replies of the prefix-patched policy itself: on-policy DPO pairs and validation replies.

The paper takes M's replies as the rejected side of every DPO pair. With a synthetic reference
that answers benign prompts with M's own words, every benign pair is then (M, M) and carries no
signal, so DPO only ever pushes towards refusing. Sampling the rejected replies from the
SFT-patched policy instead (an extension beyond the paper, recorded as such in training.json)
turns each of the policy's mistakes into a pair: a benign prompt it over-refuses gives
(M's answer > the policy's refusal), a harmful one it still answers gives (refusal > its answer).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import torch

from patchkit.train.generation import GenerationCache, GenerationSettings, generate_cached

DPO_REJECTED = ("base", "policy", "both")


def prefix_digest(base_digest: str, prefix: torch.Tensor) -> str:
    """A cache key for base + this exact prefix (its fp32 bytes)."""
    data = prefix.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
    return f"{base_digest}+prefix-sha256:{hashlib.sha256(data).hexdigest()}"


def policy_replies(
    base_model: Any,
    tokenizer: Any,
    prefix: torch.Tensor,
    texts: Sequence[str],
    *,
    base_digest: str,
    settings: GenerationSettings,
    batch_size: int,
    cache: GenerationCache | None,
    desc: str,
) -> list[str]:
    """Greedy replies of base + prefix, through the runtime's patched model (the same prefix
    placement, positions and KV reuse as `patchkit.load`), cached by prefix digest."""
    from patchkit.runtime.patched import PatchedModel

    model = PatchedModel(base_model, prefix.detach().to(next(base_model.parameters()).device))
    store = cache if cache is not None else GenerationCache()
    return generate_cached(model, tokenizer, list(texts), model_digest=prefix_digest(base_digest, prefix),
                           settings=settings, batch_size=batch_size, cache=store, desc=desc)
