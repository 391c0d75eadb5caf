"""The detector's out-of-sample figures: recomputed from the blind-labelled replies they quote.

`tests/data/refusal-labels-v2.jsonl` holds replies of several configurations to held-out
prompts, generated after `refusal-markers-v2` was frozen and labelled by reading prompt and
reply only. Third-party prompts are stored by dataset name and sha256, not as text.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from patchkit.eval.refusal_labels import OUT_OF_SAMPLE, measure, out_of_sample_check

LABELS = Path(__file__).parents[1] / "data" / "refusal-labels-v2.jsonl"
OURS = ("harm-direct:", "contrast:", "everyday:", "benign:", "factual:")


def _rows() -> list[dict[str, object]]:
    return [json.loads(x) for x in LABELS.read_text(encoding="utf-8").splitlines() if x.strip()]


def test_label_set_is_big_diverse_and_commits_no_dataset_text() -> None:
    rows = _rows()
    assert len(rows) >= 300
    assert len({r["source"] for r in rows}) >= 3
    assert {r["label"] for r in rows} == {"refusal", "compliance"}
    for r in rows:
        assert isinstance(r["reply"], str) and isinstance(r["set"], str)
        if str(r["set"]).startswith(OURS):
            assert isinstance(r["prompt"], str)
        else:
            assert r["prompt"] is None and len(str(r["prompt_sha256"])) == 64


def test_recorded_figures_match_the_labels() -> None:
    assert OUT_OF_SAMPLE is not None
    again = measure(_rows(), str(OUT_OF_SAMPLE["labelled_by"]))
    assert again == OUT_OF_SAMPLE
    assert out_of_sample_check() == OUT_OF_SAMPLE


def test_measure_reacts_to_wrong_labels() -> None:
    flipped = [{**r, "label": "compliance" if r["label"] == "refusal" else "refusal"} for r in _rows()]
    m = measure(flipped)
    assert float(m["precision"]) < 0.5 and float(m["recall"]) < 0.5  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["precision", "recall"])
def test_intervals_bracket_the_point(field: str) -> None:
    assert OUT_OF_SAMPLE is not None
    lo, mid, hi = (float(OUT_OF_SAMPLE[f"{field}{s}"]) for s in ("_low", "", "_high"))  # type: ignore[arg-type]
    assert 0.0 <= lo <= mid <= hi <= 1.0
