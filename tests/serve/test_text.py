"""Incremental detokenization: streamed deltas add up to the one-shot decode; stop strings cut and hold back."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from patchkit.serve.text import TextTracker

pytestmark = [pytest.mark.torch]


@pytest.fixture(scope="module")
def tok(tiny_model_factory: Callable[[str], Path]) -> Any:
    from patchkit.lm.loading import load_tokenizer

    return load_tokenizer(tiny_model_factory("llama"))


def _feed(tok: Any, ids: list[int], stop: tuple[str, ...] = ()) -> tuple[list[str], TextTracker]:
    t = TextTracker(tok, stop)
    deltas = [t.push(i) for i in ids]
    deltas.append(t.finish())
    return deltas, t


def test_deltas_add_up_to_the_whole_decode(tok: Any) -> None:
    text = "Sure, here is a simple recipe: mix flour, water, salt and yeast. ünïcödé ✓"
    ids = tok(text, add_special_tokens=False).input_ids
    deltas, t = _feed(tok, ids)
    assert "".join(deltas) == tok.decode(ids, skip_special_tokens=True) == t.text
    assert sum(1 for d in deltas if d) > 5  # it really streams
    # A multi-byte character split over byte tokens never streams half a character.
    assert all("\ufffd" not in d for d in deltas)


def test_stop_strings_cut_and_are_held_back(tok: Any) -> None:
    text = "I can't help with that request because it could cause harm."
    ids = tok(text, add_special_tokens=False).input_ids
    deltas, t = _feed(tok, ids, stop=("request",))
    assert t.stopped and t.text == "I can't help with that " and "".join(deltas) == t.text
    assert not any("req" in d for d in deltas)  # the start of the stop string was held back, then dropped
    deltas, t = _feed(tok, ids, stop=("never there",))
    assert not t.stopped and "".join(deltas) == text
