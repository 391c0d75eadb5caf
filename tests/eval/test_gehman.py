"""Toxicity as Gehman et al. measure it: k samples per prompt, worst case per prompt."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from patchkit.errors import UsageError
from patchkit.eval import CallableConfig, run_eval
from patchkit.eval.gehman import expected_max_toxicity, per_prompt_max, toxicity_probability
from patchkit.eval.toxicity import register_scorer, unregister_scorer


def test_per_prompt_max_and_the_two_figures() -> None:
    maxima = per_prompt_max([0.1, 0.9, 0.2, 0.0, 0.3, 0.4], 3)
    assert maxima == [0.9, 0.4]
    emt = expected_max_toxicity(maxima)
    assert emt["value"] == pytest.approx(0.65) and emt["n"] == 2 and emt["low"] <= 0.65 <= emt["high"]
    prob = toxicity_probability(maxima)
    assert prob["value"] == 0.5 and prob["n"] == 2 and 0 < prob["low"] < 0.5 < prob["high"] < 1
    assert toxicity_probability([0.5])["value"] == 1.0  # Gehman: toxic at >= 0.5
    with pytest.raises(ValueError):
        per_prompt_max([0.1, 0.2], 3)


class Score:
    name = "test-word-score"

    def score(self, texts: Any) -> list[float]:
        return [1.0 if "awful" in t else 0.0 for t in texts]


@pytest.fixture
def word_scorer() -> Iterator[str]:
    register_scorer("test-word-score", Score)
    yield "test-word-score"
    unregister_scorer("test-word-score")


def test_sampled_toxicity_suite_groups_k_replies_per_prompt(fake_wheels: Path, word_scorer: str) -> None:
    calls: list[list[str]] = []

    def every_third_awful(prompts: list[str]) -> list[str]:
        calls.append(prompts)
        return ["awful words" if i % 3 == 0 else "fine words" for i in range(len(prompts))]

    cfgs = [CallableConfig("baseline", "one awful reply in three", every_third_awful),
            CallableConfig("patched", "always fine", lambda ps: ["fine" for _ in ps])]
    res = run_eval(None, suite="toxicity", configs=cfgs, toxicity_scorer=word_scorer, samples=3, temperature=1.0)
    n_prompts = len(calls[0]) // 3
    assert all(calls[0][i] == calls[0][i + 1] == calls[0][i + 2] for i in range(0, len(calls[0]), 3))
    base = res.configs["baseline"]["metrics"]
    assert base["expected_max_toxicity"]["value"] == 1.0 and base["expected_max_toxicity"]["n"] == n_prompts
    assert base["toxicity_probability"]["value"] == 1.0
    assert base["toxicity_mean"]["value"] == pytest.approx(1 / 3)
    patched = res.configs["patched"]["metrics"]
    assert patched["expected_max_toxicity"]["value"] == 0.0 and patched["toxicity_probability"]["high"] > 0
    rows = {m["name"]: m for m in res.metrics}
    assert rows["expected_max_toxicity"]["baseline"] == 1.0 and rows["expected_max_toxicity"]["value"] == 0.0
    assert res.settings["samples_per_prompt"] == 3
    assert [r["sample"] for r in res.configs["patched"]["samples"]["realtoxicityprompts:test"][:3]] == [0, 1, 2]


def test_samples_need_sampling(fake_wheels: Path) -> None:
    with pytest.raises(UsageError, match="needs sampling"):
        run_eval(None, suite="toxicity", configs=[CallableConfig("baseline", "x", lambda ps: ps)], samples=3)
