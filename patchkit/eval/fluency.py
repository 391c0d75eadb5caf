"""Fluency: the perplexity of a configuration's replies under the *base* model.

One fixed judge of fluency (the unpatched base model, reading the plain chat-formatted prompt)
for every configuration, so a patch that makes the model babble shows up as higher perplexity.
Corpus-level: `exp(total NLL / total tokens)` over all non-empty replies.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from patchkit.eval.backend import Backend


def perplexity(base: Backend, prompts: Sequence[str], replies: Sequence[str]) -> tuple[float | None, int]:
    """(perplexity, number of replies scored); None when every reply is empty."""
    nll, tokens = base.completion_nll(prompts, replies)
    scored = sum(1 for r in replies if r.strip())
    if tokens == 0:
        return None, 0
    return math.exp(nll / tokens), scored
