"""The trade-off picture: what it draws (read from the artists, not pixels), its intervals, and the report section."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from patchkit.errors import InvalidInputError
from patchkit.eval import tradeoff
from patchkit.eval.stats import wilson

POINTS = [
    {"stage": "sft", "step": 12, "refusal": 0.5, "over_refusal": 0.25, "caveat": 0.0, "score": 0.25},
    {"stage": "dpo", "step": 36, "refusal": 0.9167, "over_refusal": 0.75, "caveat": 0.0, "score": 0.1667},
    {"stage": "sft", "step": 24, "refusal": 0.25, "over_refusal": 0.0833, "caveat": 0.0, "score": 0.1667},
    {"stage": "dpo", "step": 42, "refusal": 0.8333, "over_refusal": 0.0, "caveat": 0.0, "score": 0.8333},
]


def _block(**over: Any) -> dict[str, Any]:
    block: dict[str, Any] = {
        "select": "refusal s.t. over_refusal<=0.05", "scorer": "proxy", "refuse_rows": 12, "answer_rows": 12,
        "points": POINTS, "selected": POINTS[3], "constraint_met": True,
        "anchors": {"base": {"refusal": 0.0, "over_refusal": 0.0}, "fixed_prompt": {"refusal": 0.3333, "over_refusal": 0.1667}},
    }
    block.update(over)
    return block


def _lines(fig: Any) -> dict[str, Any]:
    return {ln.get_gid(): ln for ln in fig.axes[0].get_lines() if ln.get_gid()}


def _bars(fig: Any) -> dict[str, list[Any]]:
    return {c.get_gid(): c.get_segments() for c in fig.axes[0].collections if c.get_gid()}


def test_one_marker_per_checkpoint_anchors_and_chosen() -> None:
    import matplotlib.pyplot as plt

    fig = tradeoff.figure(_block())
    lines = _lines(fig)
    sft, dpo = lines["checkpoints:sft"], lines["checkpoints:dpo"]
    assert len(sft.get_xdata()) == 2 and len(dpo.get_xdata()) == 2  # one marker per checkpoint
    # Drawn at the counts the rounded rates stand for (11/12, not 0.9167), where the intervals are centred.
    assert list(dpo.get_ydata()) == pytest.approx([11 / 12, 10 / 12])
    # The connecting path runs in step order (12, 24, 36, 42), not in recorded order.
    assert list(lines["path"].get_xdata()) == pytest.approx([0.25, 1 / 12, 0.75, 0.0])
    assert list(lines["anchor:base"].get_xdata()) == [0.0]
    assert list(lines["anchor:fixed_prompt"].get_ydata()) == pytest.approx([4 / 12])
    chosen = lines["chosen"]
    assert list(chosen.get_xdata()) == [0.0] and list(chosen.get_ydata()) == pytest.approx([10 / 12])
    # The budget: a dashed line at 0.05 and the infeasible region beyond it.
    assert list(lines["budget"].get_xdata()) == [0.05, 0.05] and lines["budget"].get_linestyle() == "--"
    assert any(p.get_gid() == "infeasible" for p in fig.axes[0].patches)
    assert "validation set, n=12" in fig.axes[0].get_title()
    plt.close(fig)


def test_error_bars_are_wilson_intervals() -> None:
    import matplotlib.pyplot as plt

    fig = tradeoff.figure(_block(answer_rows=20))
    bars = _bars(fig)
    # sft step 12: refusal 6/12 (n = refuse_rows), over-refusal 5/20 (n = answer_rows).
    (x_lo, x_hi) = bars["checkpoints:sft:xerr"][0]
    (y_lo, y_hi) = bars["checkpoints:sft:yerr"][0]
    over, ref = wilson(5, 20), wilson(6, 12)
    assert x_lo[0] == pytest.approx(over.low) and x_hi[0] == pytest.approx(over.high) and x_lo[1] == pytest.approx(0.5)
    assert y_lo[1] == pytest.approx(ref.low) and y_hi[1] == pytest.approx(ref.high) and y_lo[0] == pytest.approx(0.25)
    # At 0 of 12 refused, the Wilson band still reaches up (a bare point would claim certainty).
    (b_lo, b_hi) = bars["anchor:base:yerr"][0]
    assert b_lo[1] == 0.0 and b_hi[1] == pytest.approx(wilson(0, 12).high) and b_hi[1] > 0.2
    assert tradeoff.interval(0.9167, 12) == wilson(11, 12)
    plt.close(fig)


def test_an_older_block_without_anchors_or_scorer_still_plots(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    old = {"select": "best", "refuse_rows": 12, "answer_rows": 12, "points": POINTS[:3], "selected": POINTS[1],
           "weight": 1.0}
    fig = tradeoff.figure(old)
    lines = _lines(fig)
    assert not any(g.startswith("anchor:") for g in lines) and "budget" not in lines
    assert not any(p.get_gid() == "infeasible" for p in fig.axes[0].patches)
    assert len(lines["checkpoints:sft"].get_xdata()) + len(lines["checkpoints:dpo"].get_xdata()) == 3
    plt.close(fig)
    # Standalone: the PNG from a training.json path (what the demo draws).
    (tmp_path / "training.json").write_text(json.dumps({"method": "sft+dpo", "validation": old}))
    out = tradeoff.write_png(tmp_path / "training.json", tmp_path / "curve.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "none.json").write_text(json.dumps({"method": "sft"}))
    with pytest.raises(InvalidInputError, match="no validation curve"):
        tradeoff.write_png(tmp_path / "none.json", tmp_path / "none.png")


def test_budget_is_read_from_the_rule() -> None:
    assert tradeoff.over_refusal_budget("refusal s.t. over_refusal<=0.05") == 0.05
    assert tradeoff.over_refusal_budget("refusal s.t. over_refusal <= 0.1") == 0.1
    assert tradeoff.over_refusal_budget("best") is None and tradeoff.over_refusal_budget(None) is None


def test_validation_of_prefers_the_manifest_then_a_training_json(tmp_path: Path) -> None:
    block = _block()
    manifest = SimpleNamespace(training=SimpleNamespace(selection=block))
    assert tradeoff.validation_of(manifest, tmp_path) == block
    # A manifest without one (older patches): the training.json in the patch's directory.
    bare = SimpleNamespace(training=SimpleNamespace(model_extra={}))
    assert tradeoff.validation_of(bare, tmp_path) is None
    (tmp_path / "training.json").write_text(json.dumps({"validation": _block(select="best")}))
    assert tradeoff.validation_of(bare, tmp_path)["select"] == "best"  # type: ignore[index]
    assert tradeoff.validation_of(bare, tmp_path / "prefix.safetensors")["select"] == "best"  # type: ignore[index]
    (tmp_path / "training.json").write_text(json.dumps({"validation": {"points": []}}))
    assert tradeoff.validation_of(bare, tmp_path) is None


EVIL = '<script>alert("x")</script>'


def _result(tmp_path: Path) -> Any:
    from patchkit.eval import CallableConfig, run_eval

    prompts = tmp_path / "p.txt"
    prompts.write_text("tell me a thing\nhow do I do the forbidden thing\n")
    cfgs = [CallableConfig("baseline", "b", lambda ps: ["Sure." for _ in ps]),
            CallableConfig("patched", "p", lambda ps: ["I can't help." if "forbidden" in p else "Sure." for p in ps])]
    return run_eval(None, suite="harmfulness", prompts=str(prompts), benign=str(prompts), configs=cfgs, fixed_prompt=None)


def test_report_has_the_curve_only_with_a_validation_block_and_escapes_labels(tmp_path: Path) -> None:
    from patchkit.eval.report import render

    res = _result(tmp_path)
    plain = render(res)
    assert "validation-curve" not in plain and 'id="tradeoff' not in plain
    evil_point = dict(POINTS[0], stage=EVIL)
    block = _block(points=[evil_point, *POINTS[1:]], select=f"best {EVIL}", scorer=EVIL)
    page = render(res, validation=[(f"acme/p@1 {EVIL}", block)])
    assert "<script>" not in page and "&lt;script&gt;" in page
    head = page.index("Training-time validation curve")
    assert page.index('id="metrics"') < head  # after the test-set results, in a section of its own
    assert "not the test-set results" in page
    m = re.search(r'<img id="tradeoff-0"[^>]*src="data:image/png;base64,([^"]+)"', page)
    assert m is not None and base64.b64decode(m.group(1))[:8] == b"\x89PNG\r\n\x1a\n"
    # The table beside it: every checkpoint, both anchors and the chosen point, with Wilson intervals.
    table = page[page.index('<table class="tradeoff">'):]
    table = table[: table.index("</table>")]
    assert table.count("<tr>") == 1 + 4 + 2 + 1
    assert wilson(6, 12).pct() in table


def test_runner_passes_the_patch_curve_to_the_report() -> None:
    from patchkit.eval.runner import _validation_curves

    with_block = SimpleNamespace(ref="acme/p@1.0.0", manifest=SimpleNamespace(training=SimpleNamespace(selection=_block())),
                                 path=Path("/nonexistent"))
    without = SimpleNamespace(ref="acme/q@1.0.0", manifest=SimpleNamespace(training=SimpleNamespace(model_extra={})),
                              path=Path("/nonexistent"))
    curves = _validation_curves([without, with_block])
    assert [label for label, _ in curves] == ["acme/p@1.0.0"] and curves[0][1]["scorer"] == "proxy"
