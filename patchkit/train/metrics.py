"""Measuring a prefix the way training sees it: reference-response loss and DPO margins.

These load the base model from its directory; they exist for tests, notes and quick checks.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from patchkit.lm.loading import load_model
from patchkit.train.dpo import Pair, margins
from patchkit.train.generation import GenerationCache, GenerationSettings, encode_prompt, format_prompt, generate_cached
from patchkit.train.model import Example, PrefixLM
from patchkit.train.sft import response_nll


def _load(base: Path, prefix: torch.Tensor) -> tuple[PrefixLM, Any]:
    model, tok = load_model(Path(base), device="cpu", dtype="float32")
    return PrefixLM(model, prefix), tok


def _examples(tok: Any, prompts: Sequence[str], responses: Sequence[str], max_new_tokens: int) -> list[Example]:
    from patchkit.train.trainer import _response_ids

    return [
        Example(tuple(encode_prompt(tok, format_prompt(tok, p))), _response_ids(tok, r, max_new_tokens))
        for p, r in zip(prompts, responses, strict=True)
    ]


def response_loss(base: Path, prefix: torch.Tensor, prompts: Sequence[str], responses: Sequence[str], max_new_tokens: int = 64) -> float:
    """Mean per-token NLL of `responses` after `prompts` under base+prefix."""
    model, tok = _load(base, prefix)
    return response_nll(model, _examples(tok, prompts, responses, max_new_tokens), int(tok.pad_token_id), torch.device("cpu"))


def pair_margins(
    base: Path, prefix: torch.Tensor, prompts: Sequence[str], chosen: Sequence[str], rejected: Sequence[str], max_new_tokens: int = 64
) -> list[float]:
    """log p(chosen) - log p(rejected) per prompt under base+prefix."""
    model, tok = _load(base, prefix)
    c = _examples(tok, prompts, chosen, max_new_tokens)
    r = _examples(tok, prompts, rejected, max_new_tokens)
    return margins(model, [Pair(a, b) for a, b in zip(c, r, strict=True)], int(tok.pad_token_id), torch.device("cpu"))


def base_responses(base: Path, prompts: Sequence[str], max_new_tokens: int = 64, batch_size: int = 8) -> list[str]:
    """M's own greedy responses, through the same cache training uses."""
    from patchkit.train.trainer import _fingerprint

    model, tok = load_model(Path(base), device="cpu", dtype="float32")
    settings = GenerationSettings(max_new_tokens=max_new_tokens, dtype="float32")
    texts = [format_prompt(tok, p) for p in prompts]
    return generate_cached(model, tok, texts, model_digest=_fingerprint(Path(base)), settings=settings, batch_size=batch_size, cache=GenerationCache())
