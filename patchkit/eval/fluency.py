"""Fluency: the perplexity of a configuration's replies under the *base* model.

One fixed judge of fluency (the unpatched base model, reading the plain chat-formatted prompt)
for every configuration, so a patch that makes the model babble shows up as higher perplexity.
Corpus-level: `exp(total NLL / total tokens)` over all non-empty replies.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from patchkit.eval.backend import Backend
from patchkit.eval.stats import Interval, bootstrap_ratio


def perplexity(base: Backend, prompts: Sequence[str], replies: Sequence[str]) -> tuple[float | None, int]:
    """(perplexity, number of replies scored); None when every reply is empty."""
    nll, tokens = base.completion_nll(prompts, replies)
    scored = sum(1 for r in replies if r.strip())
    if tokens == 0:
        return None, 0
    return math.exp(nll / tokens), scored


def reply_nlls(base: Backend, prompts: Sequence[str], replies: Sequence[str]) -> list[tuple[float, int]]:
    """(NLL, tokens) of each non-empty reply under the base model, for intervals over replies."""
    keep = [(p, r) for p, r in zip(prompts, replies, strict=True) if r.strip()]
    if not keep:
        return []
    formatted = [base.format(p) for p, _ in keep]
    lps = base.continuation_logprobs(formatted, [r for _, r in keep], add_special=not base.chat)
    return [(-lp, len(base.tokenizer(r, add_special_tokens=False)["input_ids"])) for (_, r), lp in zip(keep, lps, strict=True)]


def perplexity_interval(base: Backend, prompts: Sequence[str], replies: Sequence[str], *, seed: int = 0) -> Interval | None:
    """Corpus perplexity of the replies with a bootstrap interval over replies (None if all empty)."""
    rows = reply_nlls(base, prompts, replies)
    if not rows or sum(t for _, t in rows) == 0:
        return None
    mean_nll = bootstrap_ratio([n for n, _ in rows], [float(t) for _, t in rows], seed=seed)
    return Interval(math.exp(mean_nll.value), math.exp(mean_nll.low), math.exp(mean_nll.high), mean_nll.n)
