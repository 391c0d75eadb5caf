"""`--select` constraint rules: the parser (round trip, whitespace, garbage) and the choice it makes."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from patchkit.errors import UsageError
from patchkit.train.config import make_config
from patchkit.train.selection import (
    METRICS,
    Constraint,
    SelectionRule,
    Tracker,
    ValidationPoint,
    parse_rule,
    parse_select,
)

bounds = st.floats(min_value=0.0, max_value=1.0, allow_nan=False, allow_infinity=False)
constraints = st.builds(Constraint, st.sampled_from(METRICS), st.sampled_from(("<=", ">=")), bounds)
rules = st.builds(SelectionRule, st.lists(constraints, min_size=1, max_size=4).map(tuple))
spaces = st.text(alphabet=" \t", max_size=3)


@given(rules)
def test_canonical_text_parses_back_to_an_equal_rule(rule: SelectionRule) -> None:
    assert parse_rule(str(rule)) == rule
    assert parse_select(str(rule)) == rule


@given(rules, spaces, spaces, spaces)
def test_whitespace_does_not_change_the_rule(rule: SelectionRule, a: str, b: str, c: str) -> None:
    parts = [f"{a}{x.metric}{b}{x.op}{c}{x.bound!r}{a}" for x in rule.constraints]
    text = f"{c}refusal{a} s.t.{b}" + f" {b}and{c} ".join(parts) + b
    assert parse_rule(text) == rule


@settings(max_examples=300)
@given(st.text(max_size=40))
def test_garbage_is_a_usage_error_or_a_valid_rule(text: str) -> None:
    try:
        got = parse_select(text)
    except UsageError as exc:
        assert "refusal s.t." in (exc.hint or "")  # the hint shows the grammar
        return
    # Whatever was accepted is a real selection: best, last or a rule that round-trips.
    assert got in ("best", "last") or (isinstance(got, SelectionRule) and parse_rule(str(got)) == got)


@pytest.mark.parametrize("text", [
    "refusal s.t. overrefusal<=0.05",  # unknown metric
    "refusal s.t. over_refusal<0.05",  # strict operator
    "refusal s.t. over_refusal<=1.5",  # outside [0, 1]
    "refusal s.t. over_refusal<=-0.1",
    "refusal s.t.",  # no constraint
    "refusal over_refusal<=0.05",  # no s.t.
    "over_refusal s.t. refusal>=0.9",  # the objective is refusal
    "refusal s.t. over_refusal<=0.05 and",
    "refusal s.t. over_refusal<=0.05 or caveat<=0.1",
    "refusal s.t. over_refusal<=nan",
    "bestt",
])
def test_bad_rules_are_usage_errors_at_config_time(text: str) -> None:
    with pytest.raises(UsageError):
        make_config(select=text)


def test_config_keeps_best_and_last_and_canonicalizes_rules() -> None:
    assert make_config(select="best").select == "best" and make_config().select == "last"
    cfg = make_config(select="  refusal   s.t.over_refusal <= .05 and caveat<=0.1 ")
    assert cfg.select == "refusal s.t. over_refusal<=0.05 and caveat<=0.1"
    assert make_config(selection_scorer="proxy").selection_scorer == "proxy"


def _point(step: int, refusal: float, over: float, caveat: float = 0.0) -> ValidationPoint:
    return ValidationPoint("sft", step, refusal, over, caveat, refusal - over - caveat)


def _chosen(rule: str, points: list[ValidationPoint]) -> int:
    import torch

    tracker = Tracker(1.0, rule=parse_rule(rule))
    for p in points:
        tracker.add(p, torch.full((1, 2), float(p.step)))
    assert tracker.best is not None and float(tracker.best_prefix[0, 0]) == tracker.best.step  # the prefix kept is the point's
    return tracker.best.step


def test_rule_picks_the_most_refusing_point_within_the_budget() -> None:
    pts = [_point(1, 0.5, 0.0), _point(2, 0.9, 0.2), _point(3, 0.7, 0.05), _point(4, 0.7, 0.0), _point(5, 0.6, 0.0)]
    assert _chosen("refusal s.t. over_refusal<=0.05", pts) == 4  # 3 and 4 tie on refusal; 4 over-refuses less
    assert _chosen("refusal s.t. over_refusal<=0.05", [*pts, _point(6, 0.7, 0.0)]) == 6  # a full tie: the later step
    assert _chosen("refusal s.t. over_refusal<=0.5", pts) == 2
    assert _chosen("refusal s.t. over_refusal<=0.05 and refusal>=0.65", pts) == 4
    assert parse_rule("refusal s.t. over_refusal<=0.05").feasible(_point(1, 0.5, 1 / 20))  # k/n at the bound is in


def test_rule_falls_back_to_the_least_violation_when_nothing_is_feasible() -> None:
    pts = [_point(1, 0.2, 0.3), _point(2, 0.9, 0.2), _point(3, 0.5, 0.2), _point(4, 0.95, 0.5)]
    rule = parse_rule("refusal s.t. over_refusal<=0.1")
    assert _chosen(str(rule), pts) == 2  # 2 and 3 are 0.1 over; 2 refuses more
    assert not any(rule.feasible(p) for p in pts)


def test_tracker_state_round_trips_the_rule() -> None:
    import torch

    tracker = Tracker(1.0, rule=parse_rule("refusal s.t. over_refusal<=0.1"))
    tracker.add(_point(1, 0.5, 0.0), torch.zeros(1, 2))
    again = Tracker.from_state(tracker.state())
    assert again.rule == tracker.rule and again.points == tracker.points and again.best_index == 0
    assert Tracker.from_state({**Tracker(1.0).state()}).rule is None


def test_cli_refuses_a_bad_rule_before_touching_the_model(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, "-m", "patchkit", "train", "--base", str(tmp_path / "no-model"), "--reference", "r.jsonl",
         "--prompts", "p.jsonl", "--domain", "harmfulness", "--out", str(tmp_path / "out"),
         "--select", "refusal s.t. helpfulness<=0.1"],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(root)}, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "unknown metric 'helpfulness'" in proc.stderr and "refusal s.t. METRIC OP NUMBER" in proc.stderr
    assert not (tmp_path / "out").exists()
