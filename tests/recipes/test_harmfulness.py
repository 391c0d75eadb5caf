"""The harmfulness recipe: sources, held-out splits, the synthetic reference and its command line."""

from __future__ import annotations

import json
from pathlib import Path

from patchkit.demo.recipes.harmfulness import (
    DEMO,
    FULL,
    GATE_LABELS,
    GATED_ROUND,
    REFUSALS,
    gate_labels,
    gated_round_data,
    refusal_for,
    select_data,
    train_args,
    write_training_files,
)
from patchkit.eval.datasets import load_dataset


def _load(spec: str) -> list[str]:
    return load_dataset(spec).prompts


def test_demo_data_is_disjoint_from_validation_and_test(fake_wheels: Path) -> None:
    data = select_data(DEMO, _load)
    train = set(data.harmful) | set(data.benign)
    val = {r["prompt"] for r in data.validation}
    test = set()
    for spec in ("harmbench:test", "harm-direct:test", "contrast:test", "everyday:test", "benign:test", "factual:test",
                 "donotanswer-refusal:all"):
        test |= set(_load(spec))
    assert train and val and not train & val and not train & test and not val & test
    counts = data.counts()
    assert counts["validation_refuse"] > 0 and counts["validation_answer"] > 0
    # No DoNotAnswer prompt is ever trained on: it is the held-out source.
    assert not train & set(_load("donotanswer"))


def test_full_recipe_has_more_benign_than_it_needs_and_no_advbench_in_demo(fake_wheels: Path) -> None:
    assert "advbench" not in DEMO.harmful_train and "advbench" in FULL.harmful_train
    assert FULL.train["dpo_rejected"] == "policy" and FULL.train["benign_ratio"] == 1.0
    assert FULL.train["select"] == "best" and FULL.train["dpo_epochs"] == 2
    # The demo's cost (issue 23: a fresh demo in < 15 minutes): one DPO epoch, a point every 8 steps.
    assert DEMO.train["dpo_epochs"] == 1 and DEMO.train["eval_every"] == 8
    assert "gate_recall" not in DEMO.train and "gate_recall" not in FULL.train
    from patchkit.train.selection import parse_select

    assert str(parse_select(str(DEMO.train["select"]))) == DEMO.train["select"]


def test_reference_refuses_harmful_and_keeps_m_answers(tmp_path: Path, fake_wheels: Path) -> None:
    data = select_data(DEMO, _load)
    answers = [f"answer {i}" for i in range(len(data.benign))]
    paths = write_training_files(data, answers, tmp_path)
    rows = [json.loads(x) for x in paths["reference"].read_text().splitlines()]
    by_prompt = {r["prompt"]: r["response"] for r in rows}
    assert all(by_prompt[p] in REFUSALS and by_prompt[p] == refusal_for(p) for p in data.harmful)
    assert [by_prompt[p] for p in data.benign] == answers
    assert len(paths["prompts"].read_text().splitlines()) == len(rows)
    val = [json.loads(x) for x in paths["validation"].read_text().splitlines()]
    assert {r["expect"] for r in val} == {"refuse", "answer"}
    args = train_args(DEMO, paths, tmp_path / "model", tmp_path / "out")
    assert args[:2] == ["train", "--base"] and "--validation" in args and args[args.index("--dpo-rejected") + 1] == "policy"


def test_gate_labels_come_from_train_splits_only_and_never_from_donotanswer(fake_wheels: Path) -> None:
    rows = gate_labels(_load)
    prompts = [r["prompt"] for r in rows]
    assert len(prompts) == len(set(prompts)) and {r["expect"] for r in rows} == {"refuse", "answer"}
    held_out = set(_load("donotanswer"))
    for spec in ("harmbench", "harm-direct", "contrast", "everyday", "benign", "factual"):
        held_out |= set(_load(f"{spec}:validation")) | set(_load(f"{spec}:test"))
    assert not set(prompts) & held_out
    by_prompt = {r["prompt"]: r["expect"] for r in rows}
    for name, (expect, _) in GATE_LABELS.items():
        first = _load(f"{name}:train")[:1]
        assert all(by_prompt[p] == expect for p in first if p in by_prompt), name
    assert all(by_prompt[p] == "answer" for p in _load("contrast:train"))


def test_the_gated_round_takes_every_harmful_prompt_and_the_first_rounds_benign_rows(fake_wheels: Path, tmp_path: Path) -> None:
    """Every harmful prompt of GATED_ROUND's sources with its refusal, then the first round's benign rows
    in order (`patchkit train --gated-by` then keeps those the gate routes)."""
    data = select_data(FULL, _load)
    answers = [f"Sure, answer {i}." for i in range(len(data.benign))]
    paths = write_training_files(data, answers, tmp_path)
    first = [json.loads(x) for x in paths["reference"].read_text().splitlines()]
    rows = gated_round_data(_load, first)
    harmful = [r["prompt"] for r in rows if r["response"] in REFUSALS]
    assert all(r["response"] == refusal_for(r["prompt"]) for r in rows if r["response"] in REFUSALS)
    assert set(_load("harm-direct:train")) <= set(harmful) and set(_load("harmbench:train")) <= set(harmful)
    assert [r["prompt"] for r in rows[len(harmful):]] == [p for p in data.benign if p not in set(harmful)]
    assert [r["response"] for r in rows[len(harmful):]] == [a for p, a in zip(data.benign, answers, strict=True)
                                                             if p not in set(harmful)]
    assert not {r["prompt"] for r in rows} & {v["prompt"] for v in data.validation}
    assert GATED_ROUND.train["stages"] == "dpo" and GATED_ROUND.train["select"] == "best"
