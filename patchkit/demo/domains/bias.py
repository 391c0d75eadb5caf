"""Gender bias: profession prompts that never state a gender, and a gender-neutral M'.

Training prompts use templates and professions of their own: none of the evaluation's
templates (`patchkit.eval.bias.GAS_TEMPLATES`, `GLD_TEMPLATES`) and none of its professions
(`PROFESSIONS`), so GAS and GLD are measured on phrasings and jobs the patch never saw.

The reference M': M under a neutrality system prompt answers greedily; if the answer still
attributes a gender, it is rewritten with gender-neutral words (he/she -> they, his/her ->
their, man/woman -> person, ...; verbs after "they" are put in the plural). The rejected reply
is M's own greedy answer; the DPO margin is the difference in gendered attribution (1 when
only M's reply assigns a gender), so pairs where M was already neutral carry no signal.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from patchkit.eval.bias import GAS_TEMPLATES, GLD_TEMPLATES, PROFESSIONS, attributes_gender

TRAIN_PROFESSIONS: tuple[str, ...] = (
    "dentist", "bus driver", "pharmacist", "welder", "midwife", "judge", "janitor", "paramedic", "tailor",
    "bank teller", "truck driver", "flight attendant", "soldier", "veterinarian", "painter", "cleaner",
    "professor", "construction worker", "social worker", "butcher", "optician", "police officer", "model",
    "gardener", "CEO", "waiter", "therapist", "roofer", "journalist", "makeup artist", "security guard",
    "tutor", "economist", "dispatcher", "sailor", "stylist", "glazier", "translator",
    "locksmith", "choreographer",
)
TRAIN_TEMPLATES: tuple[str, ...] = (
    "Describe a typical day for a {p}.",
    "Write a short paragraph about a {p} who gets some good news.",
    "Tell me about a {p} you might meet at a party.",
    "Write three sentences about a {p} on the way home from work.",
    "Imagine a {p} at the start of a busy week. What happens?",
    "Write a short scene where a {p} talks to a customer.",
)
NEUTRALITY_PROMPT = (
    "You are a helpful assistant who writes about people without assuming their gender. When a person is "
    "described only by their job, never use he, she, his, her, him, man or woman for them: use 'they', 'their' "
    "and 'them', or the job title, and give them no gendered name."
)
INIT_TEXT = (
    "You are a helpful assistant. Never assume a person's gender from their job: refer to them as they, "
    "their and them, or by their job title."
)
REFERENCE_DESCRIPTION = (
    "gender-neutral reference built from M (no safer model is available offline): M's greedy reply under a "
    "neutrality system prompt, rewritten with gender-neutral words where it still attributes a gender; "
    "rejected = M's own greedy reply"
)

assert not set(TRAIN_PROFESSIONS) & set(PROFESSIONS)
assert not set(TRAIN_TEMPLATES) & set(GAS_TEMPLATES) | set(GLD_TEMPLATES) & set(TRAIN_TEMPLATES)


def train_prompts(limit: int | None = None) -> list[str]:
    prompts = [t.format(p=p) for p in TRAIN_PROFESSIONS for t in TRAIN_TEMPLATES]
    if limit is not None and limit < len(prompts):
        step = len(prompts) / limit
        prompts = [prompts[int(i * step)] for i in range(limit)]
    return prompts


_WORDS = {
    "he": "they", "she": "they", "him": "them", "himself": "themselves", "herself": "themselves",
    "his": "their", "hers": "theirs", "man": "person", "woman": "person", "men": "people", "women": "people",
    "boy": "child", "girl": "child", "boys": "children", "girls": "children", "male": "person", "female": "person",
    "gentleman": "person", "lady": "person", "gentlemen": "people", "ladies": "people", "guy": "person",
    "husband": "partner", "wife": "partner", "father": "parent", "mother": "parent", "son": "child",
    "daughter": "child", "brother": "sibling", "sister": "sibling", "sir": "friend", "madam": "friend",
    "he's": "they're", "she's": "they're", "he'd": "they'd", "she'd": "they'd", "he'll": "they'll", "she'll": "they'll",
}
_TITLES = re.compile(r"\b(?:Mr|Mrs|Ms|Miss)\.?\s+", re.IGNORECASE)
_TOKEN = re.compile(r"[A-Za-z']+")
# "her" is possessive before a noun-like word and objective otherwise.
_OBJECT_FOLLOWERS = frozenset(
    ["to", "for", "and", "but", "or", "so", "that", "because", "with", "at", "in", "on", "of", "from", "up", "out", "back", "again", "too", "when", "if", "as", ".", ",", "!", "?", ";", ":", "a", "an", "the", "this", "these", "those", "some", "any", "my", "your", "our", "yesterday", "today", "tomorrow", "now", "later", "there", "here", "home", "about", "into", "over", "around", "off", "down", "know", "feel"]
)
_AGREE = {"is": "are", "was": "were", "has": "have", "does": "do", "doesn't": "don't", "isn't": "aren't",
          "wasn't": "weren't", "hasn't": "haven't"}
_ADVERBS = frozenset(["also", "always", "often", "never", "usually", "then", "still", "really", "just", "quickly", "carefully", "finally"])
_NOT_VERBS = frozenset(["this", "his", "is", "was", "has", "does", "always", "perhaps", "its", "us", "yes", "thus", "across", "various"])


def _match_case(word: str, repl: str) -> str:
    if word.isupper() and len(word) > 1:
        return repl.upper()
    if word[:1].isupper():
        return repl[:1].upper() + repl[1:]
    return repl


def _plural_verb(word: str) -> str:
    low = word.lower()
    if low in _AGREE:
        return _match_case(word, _AGREE[low])
    if len(low) < 4 or not low.endswith("s") or low.endswith(("ss", "us", "is")) or low in _NOT_VERBS:
        return word
    if low.endswith("ies") and len(low) > 4:
        return word[:-3] + "y"
    if low.endswith(("ches", "shes", "xes", "sses", "zes", "oes")):
        return word[:-2]
    return word[:-1]


def neutralize(text: str) -> str:
    """Rewrite gendered references to a person as gender-neutral ones (they/their/person...)."""
    text = _TITLES.sub("", text)
    parts = re.split(r"([A-Za-z']+)", text)
    out: list[str] = []
    after_they = False
    for i, part in enumerate(parts):
        if not part or not _TOKEN.fullmatch(part):
            out.append(part)
            if part.strip() and not part.isspace():
                after_they = after_they and part.strip() == ""
            continue
        low = part.lower()
        if low == "her":
            nxt = next((p for p in parts[i + 1 :] if p.strip()), "")
            token = nxt.strip().split()[0].lower() if nxt.strip() else "."
            repl = "them" if (token in _OBJECT_FOLLOWERS or not token[:1].isalpha()) else "their"
            out.append(_match_case(part, repl))
            after_they = False
            continue
        if low in _WORDS:
            repl = _WORDS[low]
            out.append(_match_case(part, repl))
            after_they = repl == "they"
            continue
        if after_they:
            if low in _ADVERBS:
                out.append(part)
                continue
            out.append(_plural_verb(part))
            after_they = False
            continue
        out.append(part)
    return "".join(out)


def reference_rows(backend: Any, prompts: Sequence[str], *, max_new_tokens: int = 48, seed: int = 0,
                   system: str = NEUTRALITY_PROMPT) -> list[dict[str, Any]]:
    """{prompt, response (neutral), rewritten} per prompt; `backend` runs M."""
    replies = backend.generate(list(prompts), system=system, max_new_tokens=max_new_tokens, seed=seed,
                               temperature=0.0, desc="M' (neutral)")
    rows = []
    for p, c in zip(prompts, replies, strict=True):
        text = c.text
        rewritten = attributes_gender(text)
        if rewritten:
            text = neutralize(text)
        rows.append({"prompt": p, "response": text, "rewritten": rewritten, "neutral": not attributes_gender(text)})
    return rows
