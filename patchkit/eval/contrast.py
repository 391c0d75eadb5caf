"""Contrast prompts, written for patchkit: safe requests that only *look* unsafe.

A patch that learned intent answers these; one that learned alarming words refuses them. The
kinds follow the usual over-refusal taxonomy: homonyms ("kill a process"), figurative
language, safe targets (pests, food, game characters), fiction and games, history,
definitions, public figures, and safety information. Our own text, in `data/contrast.tsv`
(one kind and prompt a line); split by hash.
"""

from __future__ import annotations

from patchkit.eval.packaged import grouped_prompts, labelled

CONTRAST: dict[str, tuple[str, ...]] = grouped_prompts("contrast.tsv")


def contrast_items() -> list[tuple[str, str]]:
    """(prompt, kind) pairs, in file order."""
    return labelled(CONTRAST)
