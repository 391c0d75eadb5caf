"""The scorer that filters DPO pairs: keep a pair only if M' is clearly better than M on it.

For the harmfulness domain the margin measures how much better the chosen reply follows the
reference's own decision, judged by the evaluation's refusal detector on whole replies: when
M' refuses, a pair counts if the rejected reply does not refuse; when M' answers, it counts if
the rejected reply refuses or carries refusal/safety language (a caveat leak) and the chosen one
does not. So benign prompts make pairs too, whenever the rejected side over-refuses (M's own
replies rarely do; an SFT-patched policy's often do, see `onpolicy`). `refusal_score` and
`refusal_margin` are the earlier opening-only marker list, kept for callers.

Toxicity and bias have real scorers (`patchkit.train.pair_scorers`): the toxicity difference
and the gendered-attribution difference. Only `custom:<word>` domains fall back to a margin of
1 when the two replies differ and 0 when they are the same (an identical pair carries no DPO
signal). Pass your own `scorer(prompt, chosen, rejected) -> margin` to `train_patch` for
anything better.
"""

from __future__ import annotations

import re
from collections.abc import Callable

Scorer = Callable[[str, str, str], float]

REFUSAL_MARKERS = (
    "i can't",
    "i cannot",
    "i can not",
    "i won't",
    "i will not",
    "i'm sorry",
    "i am sorry",
    "i apologize",
    "i'm not able to",
    "i am not able to",
    "i'm unable to",
    "i am unable to",
    "i must decline",
    "i refuse",
    "can't help with",
    "cannot help with",
    "can't assist",
    "cannot assist",
    "not able to help",
    "as an ai",
    "against my guidelines",
    "not appropriate",
    "i do not feel comfortable",
    "i don't feel comfortable",
)
OPENING_CHARS = 200


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("\u2019", "'")).strip().lower()


def refusal_score(text: str) -> float:
    """1.0 if the reply opens with a refusal marker, else 0.0."""
    opening = _norm(text)[:OPENING_CHARS]
    return 1.0 if any(m in opening for m in REFUSAL_MARKERS) else 0.0


def refusal_margin(prompt: str, chosen: str, rejected: str) -> float:
    return refusal_score(chosen) - refusal_score(rejected)


def difference_margin(prompt: str, chosen: str, rejected: str) -> float:
    return 0.0 if _norm(chosen) == _norm(rejected) else 1.0


def _bad_answer(text: str) -> bool:
    from patchkit.eval.refusal import caveat, classify

    return classify(text).refused or caveat(text)


def agreement_margin(prompt: str, chosen: str, rejected: str) -> float:
    """1 when the chosen reply makes the reference's decision (refuse or answer cleanly) and the
    rejected one does not; 0 when both decide alike; -1 when only the rejected one is clean."""
    from patchkit.eval.refusal import classify

    if classify(chosen).refused:
        return 0.0 if classify(rejected).refused else 1.0
    return float(_bad_answer(rejected)) - float(_bad_answer(chosen))


AGREEMENT_SCORER = "refusal-agreement-v2"


def scorer_for(domain: str, toxicity_scorer: str | None = None) -> tuple[str, Scorer]:
    """The default scorer of a domain, with the name recorded in training.json.

    `toxicity_scorer` picks the toxicity domain's scorer (a `--toxicity-scorer` spec).
    """
    if domain == "harmfulness":
        return AGREEMENT_SCORER, agreement_margin
    if domain == "toxicity":
        from patchkit.train.pair_scorers import ToxicityMargin

        margin = ToxicityMargin(toxicity_scorer)
        return margin.name, margin
    if domain == "bias":
        from patchkit.train.pair_scorers import GENDER_MARGIN_NAME, gender_margin

        return GENDER_MARGIN_NAME, gender_margin
    return "differs-v1", difference_margin
