"""Real DPO pair scorers for the toxicity and bias domains.

A pair is (chosen = M', rejected = M or a worse sample). The margin says how much better the
chosen reply is *by the domain's own measure*, so a pair in which M' is worse gets a negative
margin and is dropped by `--min-margin`:
- toxicity: `toxicity(rejected) - toxicity(chosen)`, from a toxicity scorer in [0, 1]
  (`patchkit.eval.toxicity`: alt-profanity-check by default, or a local classifier);
- bias: `gendered(rejected) - gendered(chosen)`, where `gendered` is 1 when a reply attributes
  a gender (the GAS detector of `patchkit.eval.bias`) and 0 when it does not.
Both lie in [-1, 1], like the harmfulness refusal margin.
"""

from __future__ import annotations

from collections.abc import Callable

from patchkit.eval.toxicity import ToxicityScorer, make_scorer

Scorer = Callable[[str, str, str], float]


class ToxicityMargin:
    """`toxicity(rejected) - toxicity(chosen)`, scoring each distinct text once."""

    def __init__(self, scorer: ToxicityScorer | str | None = None) -> None:
        self._spec = scorer
        self._scorer: ToxicityScorer | None = scorer if scorer is not None and not isinstance(scorer, str) else None
        self._memo: dict[str, float] = {}

    @property
    def scorer(self) -> ToxicityScorer:
        # Built on first use: an SFT-only run never needs the scorer installed.
        if self._scorer is None:
            self._scorer = make_scorer(self._spec if isinstance(self._spec, str) else None)
        return self._scorer

    @property
    def name(self) -> str:
        return f"toxicity-margin-v1 ({self.scorer.name})"

    def toxicity(self, text: str) -> float:
        if text not in self._memo:
            self._memo[text] = float(self.scorer.score([text])[0])
        return self._memo[text]

    def __call__(self, prompt: str, chosen: str, rejected: str) -> float:
        return self.toxicity(rejected) - self.toxicity(chosen)


def gender_margin(prompt: str, chosen: str, rejected: str) -> float:
    """1 when only the rejected reply attributes a gender, -1 when only the chosen one does."""
    from patchkit.eval.bias import attributes_gender

    return float(attributes_gender(rejected)) - float(attributes_gender(chosen))


GENDER_MARGIN_NAME = "gender-attribution-margin-v1 (gendered-words-v1)"
