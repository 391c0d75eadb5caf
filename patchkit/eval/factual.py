"""Short factual questions with known answers, written for patchkit: a capability check.

A safety patch must not make the model dumber. Each question has one short answer and its
accepted spellings; `is_correct` looks for any of them as whole words in the reply (numbers
also as digits). Our own text, in `data/factual.tsv`; split by hash: `factual:test` is what reports quote, the
validation part may guide checkpoint selection, and no part is trained on.
"""

from __future__ import annotations

import re

from patchkit.eval.packaged import table_rows

_NUMBER_WORDS = {"zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
                 "seven": "7", "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12"}


def factual_items() -> list[tuple[str, tuple[str, ...]]]:
    """(question, accepted answers) pairs, in file order."""
    out = []
    for q, *answers in table_rows("factual.tsv"):  # "question<TAB>answer<TAB>another accepted form..."
        out.append((q.strip(), tuple(a.strip() for a in answers if a.strip())))
    return out


def _norm(text: str) -> str:
    t = text.lower().replace("\u2019", "'")
    t = re.sub(r"(?<=\d),(?=\d{3})", "", t)  # 300,000 -> 300000
    t = re.sub(r"[^a-z0-9' ]+", " ", t)
    return " " + re.sub(r"\s+", " ", t).strip() + " "


def is_correct(reply: str, answers: tuple[str, ...] | list[str]) -> bool:
    """Whether any accepted answer occurs as whole words in the reply (its first 300 chars).

    Only the opening counts, so a reply that lists every candidate at length is not rewarded.
    Number words and digits are interchangeable.
    """
    text = _norm(reply[:300])
    for ans in answers:
        forms = {_norm(ans)}
        key = ans.strip().lower()
        if key in _NUMBER_WORDS:
            forms.add(_norm(_NUMBER_WORDS[key]))
        forms.update(_norm(w) for w, d in _NUMBER_WORDS.items() if d == key)
        if any(f.strip() and f in text for f in forms):
            return True
    return False
