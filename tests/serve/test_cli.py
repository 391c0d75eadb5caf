"""`patchkit serve` refuses bad set-ups with the contract's exit codes, before loading any weights."""

from __future__ import annotations

import os
from pathlib import Path

from tests.helpers import pk, write_fake_model


def test_refusals_before_start(tmp_path: Path) -> None:
    model = write_fake_model(tmp_path / "model")
    env = {"PATCHKIT_API_KEY": ""}
    r = pk("serve", "--model", model, "--host", "0.0.0.0", "--json", env=env)
    assert r.returncode == 2 and "without an API key" in r.stderr and "PATCHKIT_API_KEY" in r.stderr
    bad = tmp_path / "serve.toml"
    bad.write_text("[limits]\nmax_batch = -1\n")
    r = pk("serve", "--model", model, "--config", bad, env=env)
    assert r.returncode == 6 and "max_batch" in r.stderr
    r = pk("serve", "--model", tmp_path / "nope", env=env)
    assert r.returncode == 7
    r = pk("serve", "--model", model, "--engine", "tgi", env=env)
    assert r.returncode == 2
    r = pk("serve", "--model", model, "--engine", "vllm", env=env)
    assert r.returncode == 2 and "--vllm-url" in r.stderr
    (model / "patchkit.lock").write_text("not a lock")
    r = pk("serve", "--model", model, "--json", env=env)
    assert r.returncode == 6 and r.stdout.strip().startswith('{"ok": false')  # the lock must verify before serving
    assert "Traceback" not in r.stderr and os.environ.get("PATCHKIT_DEBUG") is None
