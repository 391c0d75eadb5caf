"""Benign DPO pairs: the reference's answer chosen over a refusal, in proportion to the harmful pairs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.train.conftest import HARMFUL, REFUSAL

pytestmark = pytest.mark.torch

BENIGN_ANSWER = "Sure, here is a simple recipe: mix flour, water, salt and yeast."


def _examples(n_refuse: int, n_answer: int) -> tuple[list[Any], list[bool]]:
    from patchkit.train.model import Example

    refusals = [(900, 901), (902, 903)]
    ex = [Example((i, 50), refusals[i % 2]) for i in range(n_refuse)]
    ex += [Example((100 + i, 50), (200 + i, 201 + i)) for i in range(n_answer)]
    return ex, [True] * n_refuse + [False] * n_answer


def _harmful_pairs(ex: list[Any], refuses: list[bool]) -> list[Any]:
    from patchkit.train.dpo import Pair
    from patchkit.train.model import Example

    return [Pair(e, Example(e.prompt_ids, (7, 7))) for e, r in zip(ex, refuses, strict=True) if r]


@pytest.mark.parametrize(("ratio", "expected"), [(1.0, 3), (0.5, 2), (2.0, 5), (0.0, 0)])
def test_benign_pairs_follow_the_ratio(ratio: float, expected: int) -> None:
    from patchkit.train.benign import benign_pairs

    ex, refuses = _examples(3, 5)
    pairs = _harmful_pairs(ex, refuses)
    added, info = benign_pairs(pairs, ex, refuses, set(), ratio=ratio, seed=0)
    assert len(added) == expected == info["added"] == info["target"]  # 0.5 x 3 = 1.5 rounds to 2; 2 x 3 is capped at 5
    assert info["harmful_pairs"] == 3 and info["benign_prompts"] == 5 and info["refusal_texts"] == 2
    answers = {e for e, r in zip(ex, refuses, strict=True) if not r}
    refusal_ids = {e.response_ids for e, r in zip(ex, refuses, strict=True) if r}
    for p in added:
        assert p.chosen in answers  # chosen = the reference's own answer
        assert p.rejected.prompt_ids == p.chosen.prompt_ids and p.rejected.response_ids in refusal_ids
    assert len({p.chosen for p in added}) == len(added)  # one pair per benign prompt


def test_benign_pairs_are_seeded() -> None:
    from patchkit.train.benign import benign_pairs

    ex, refuses = _examples(2, 6)
    pairs = _harmful_pairs(ex, refuses)
    a, _ = benign_pairs(pairs, ex, refuses, set(), ratio=1.0, seed=0)
    b, _ = benign_pairs(pairs, ex, refuses, set(), ratio=1.0, seed=0)
    picks = {tuple(p.chosen.prompt_ids for p in benign_pairs(pairs, ex, refuses, set(), ratio=1.0, seed=s)[0]) for s in range(8)}
    assert a == b and len(picks) > 1


def test_the_policys_own_over_refusals_count_first() -> None:
    from patchkit.train.benign import benign_pairs
    from patchkit.train.dpo import Pair
    from patchkit.train.model import Example

    ex, refuses = _examples(2, 4)
    pairs = _harmful_pairs(ex, refuses)
    own = Pair(ex[2], Example(ex[2].prompt_ids, (555,)))  # the policy refused benign prompt 2 in its own words
    added, info = benign_pairs([*pairs, own], ex, refuses, {own}, ratio=1.0, seed=0)
    assert info["from_over_refusals"] == 1 and info["added"] == 1 and len(added) == 1
    assert added[0].chosen != ex[2]


def test_no_refusals_no_benign_pairs() -> None:
    from patchkit.train.benign import benign_pairs

    ex, refuses = _examples(0, 4)
    added, info = benign_pairs([], ex, refuses, set(), ratio=1.0, seed=0)
    assert added == [] and info["target"] == 0


def _train(base: Path, out: Path, **kw: Any) -> Any:
    from patchkit.train import train_patch

    reference = [{"prompt": p, "response": REFUSAL if i < 2 else BENIGN_ANSWER} for i, p in enumerate(HARMFUL)]
    opts: dict[str, Any] = {"stages": "dpo", "max_new_tokens": 8, "batch_size": 2, "lr": 0.05, "tokens": 4,
                            "generation_batch_size": 4, "max_steps": 1}
    opts.update(kw)
    return train_patch(base, reference, HARMFUL, domain="harmfulness", out=out, **opts)


def test_training_adds_benign_pairs_in_proportion(steerable_model: Path, tmp_path: Path) -> None:
    # The tiny model's replies are gibberish: they neither refuse nor leak caveats, so the
    # agreement scorer keeps the two harmful pairs and no benign one; benign pairs bring 2 more.
    res = _train(steerable_model, tmp_path / "d", benign_ratio=1.0)
    info = res.training["dpo_pairs"]
    assert info["benign"]["harmful_pairs"] == 2 and info["benign"]["added"] == 2 and info["kept"] == 4
    assert res.training["hyperparameters"]["benign_ratio"] == 1.0
    default = _train(steerable_model, tmp_path / "z")  # opt-in: the default adds none
    assert "benign" not in default.training["dpo_pairs"]
    half = _train(steerable_model, tmp_path / "h", benign_ratio=0.5)
    assert half.training["dpo_pairs"]["benign"]["added"] == 1 and half.training["dpo_pairs"]["kept"] == 3
    off = _train(steerable_model, tmp_path / "o", benign_ratio=0.0)
    assert off.training["dpo_pairs"]["kept"] == 2 and "benign" not in off.training["dpo_pairs"]


def test_on_policy_runs_add_benign_pairs_too(steerable_model: Path, tmp_path: Path) -> None:
    res = _train(steerable_model, tmp_path / "p", stages="sft,dpo", dpo_rejected="policy", benign_ratio=1.0)
    benign = res.training["dpo_pairs"]["benign"]
    assert benign["target"] == min(2, benign["harmful_pairs"])
    assert benign["from_over_refusals"] + benign["added"] >= benign["target"]
    assert res.training["dpo_pairs"]["kept"] >= benign["harmful_pairs"] + benign["added"]
