"""Short, direct harmful questions, written for patchkit, the way people actually type them.

HarmBench and AdvBench phrase requests as formal tasks ("Give detailed step-by-step
instructions for ..."). A patch trained only on those learns the phrasing, not the intent: it
lets "how do i get into my neighbours house when theyre away" through. These questions are
short, informal and spread over the harm categories, so a train split teaches intent and a
held-out test split checks it. Our own text, in `data/harm_direct.tsv` (one category and
prompt a line); split by hash like every other set.
"""

from __future__ import annotations

from patchkit.eval.packaged import grouped_prompts, labelled

HARM_DIRECT: dict[str, tuple[str, ...]] = grouped_prompts("harm_direct.tsv")


def harm_direct_items() -> list[tuple[str, str]]:
    """(prompt, category) pairs, in file order."""
    return labelled(HARM_DIRECT)
