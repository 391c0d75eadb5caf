"""Real pair scorers for toxicity and bias: a pair in which M' is worse is dropped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from patchkit.eval.toxicity import register_scorer, unregister_scorer
from patchkit.train.pair_scorers import ToxicityMargin, gender_margin
from patchkit.train.scorer import scorer_for

TOXIC = "You stupid worthless idiot, shut your filthy mouth, I hate you."
CIVIL = "Let's keep this calm and kind; I'd rather talk about something else."


class WordScorer:
    """Toxicity = share of a fixed list of insult words: known answers for the margin tests."""

    name = "test-insult-words"
    WORDS = ("stupid", "idiot", "hate", "filthy", "worthless")

    def score(self, texts: Any) -> list[float]:
        return [min(1.0, sum(w in t.lower() for w in self.WORDS) / 3) for t in texts]


@pytest.fixture
def insult_scorer() -> Any:
    register_scorer("test-insult-words", WordScorer)
    yield "test-insult-words"
    unregister_scorer("test-insult-words")


def test_toxicity_margin_is_rejected_minus_chosen(insult_scorer: str) -> None:
    name, margin = scorer_for("toxicity", insult_scorer)
    assert name == "toxicity-margin-v1 (test-insult-words)"
    assert margin("p", CIVIL, TOXIC) == pytest.approx(1.0)
    assert margin("p", TOXIC, CIVIL) == pytest.approx(-1.0)
    assert margin("p", CIVIL, CIVIL) == 0.0


def test_toxicity_margin_scores_each_text_once() -> None:
    calls: list[int] = []

    class Counting(WordScorer):
        def score(self, texts: Any) -> list[float]:
            calls.append(len(texts))
            return super().score(texts)

    m = ToxicityMargin(Counting())
    for _ in range(3):
        m("p", CIVIL, TOXIC)
    assert sum(calls) == 2


def test_gender_margin() -> None:
    assert gender_margin("p", "They fixed the sink.", "He fixed the sink.") == 1.0
    assert gender_margin("p", "She fixed the sink.", "They fixed the sink.") == -1.0
    assert gender_margin("p", "They fixed it.", "The plumber fixed it.") == 0.0
    assert scorer_for("bias")[0].startswith("gender-attribution-margin-v1")
    assert scorer_for("custom:style")[0] == "differs-v1"


def _train(base: Path, tmp: Path, domain: str, rows: list[dict[str, str]], **kw: Any) -> dict[str, Any]:
    from patchkit.train import train_patch

    ref = tmp / "reference.jsonl"
    ref.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    res = train_patch(base, ref, [r["prompt"] for r in rows], domain=domain, out=tmp / f"out-{domain}", stages="sft,dpo",
                      tokens=4, max_new_tokens=12, max_steps=1, batch_size=2, min_margin=0.1, **kw)
    training: dict[str, Any] = res.training
    return training


@pytest.mark.torch
def test_toxicity_pair_where_reference_is_worse_is_dropped(tiny_model_factory: Any, tmp_path: Path, insult_scorer: str) -> None:
    rows = [
        {"prompt": "Finish this: you are such a", "response": CIVIL, "rejected": TOXIC},  # M' better: kept
        {"prompt": "Continue: the neighbour came over and", "response": TOXIC, "rejected": CIVIL},  # M' worse: dropped
    ]
    training = _train(tiny_model_factory("llama"), tmp_path, "toxicity", rows, toxicity_scorer=insult_scorer)
    pairs = training["dpo_pairs"]
    assert (pairs["kept"], pairs["dropped"]) == (1, 1)
    assert pairs["scorer"] == "toxicity-margin-v1 (test-insult-words)"
    assert pairs["rejected_from"] == "reference rows"
    assert training["hyperparameters"]["scorer"] == pairs["scorer"]


@pytest.mark.torch
def test_bias_pair_where_reference_is_worse_is_dropped(tiny_model_factory: Any, tmp_path: Path) -> None:
    rows = [
        {"prompt": "Write about a pilot.", "response": "They checked the weather.", "rejected": "He checked the weather."},
        {"prompt": "Write about a nurse.", "response": "She checked the chart.", "rejected": "They checked the chart."},
        {"prompt": "Write about a baker.", "response": "They baked bread.", "rejected": "The baker baked bread."},
    ]
    pairs = _train(tiny_model_factory("llama"), tmp_path, "bias", rows)["dpo_pairs"]
    assert (pairs["kept"], pairs["dropped"]) == (1, 2)
    assert pairs["scorer"].startswith("gender-attribution-margin-v1")
