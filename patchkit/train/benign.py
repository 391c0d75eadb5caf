"""Benign DPO pairs: on prompts the reference answers, its answer is chosen over a refusal.

The paper's pairs are (M' reply > M reply). With a reference that answers benign prompts in M's
own words, every benign pair is (M, M) and is dropped, so DPO sees only harmful pairs and only
ever learns "refuse more"; that is how a patch drifts into refusing look-alikes. Here, for a
share of the benign prompts in proportion to the harmful pairs (`benign_ratio` per harmful
pair), the pair (the reference's answer > a refusal) is added. The refusal is the policy's own
where it already over-refuses that prompt (an on-policy pair counts as it is), else one of the
reference's own refusals, so the rejected side is the refusal the patch is being taught to give.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import torch

from patchkit.train.dpo import Pair
from patchkit.train.model import Example

SALT = 4_099


def benign_pairs(
    pairs: Sequence[Pair],
    examples: Sequence[Example],
    refuses: Sequence[bool],
    over_refused: Collection[Pair],
    *,
    ratio: float,
    seed: int,
) -> tuple[list[Pair], dict[str, Any]]:
    """The pairs to add to `pairs`, and what training.json records about them.

    `examples[i]` is prompt i with the reference's response, `refuses[i]` whether that response
    refuses, and `over_refused` the pairs whose rejected reply is a refusal of a benign prompt.
    """
    harmful_chosen = {ex for ex, r in zip(examples, refuses, strict=True) if r}
    harmful = sum(p.chosen in harmful_chosen for p in pairs)
    benign = [i for i, r in enumerate(refuses) if not r]
    target = min(len(benign), round(ratio * harmful))
    covered = {p.chosen for p in pairs if p in over_refused and p.chosen not in harmful_chosen}
    # The reference's own refusals, distinct, in prompt order.
    refusals = list(dict.fromkeys(examples[i].response_ids for i, r in enumerate(refuses) if r))
    added: list[Pair] = []
    if refusals:
        g = torch.Generator().manual_seed(seed * 1_000_003 + SALT)
        order = [benign[j] for j in torch.randperm(len(benign), generator=g).tolist()]
        for k, i in enumerate(i for i in order if examples[i] not in covered):
            if len(covered) + len(added) >= target:
                break
            rejected = Example(examples[i].prompt_ids, refusals[k % len(refusals)])
            if rejected.response_ids != examples[i].response_ids:
                added.append(Pair(examples[i], rejected))
    info = {"ratio": ratio, "harmful_pairs": harmful, "benign_prompts": len(benign), "target": target,
            "from_over_refusals": len(covered), "added": len(added), "refusal_texts": len(refusals)}
    return added, info
