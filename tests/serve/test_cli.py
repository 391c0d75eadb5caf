"""`patchkit serve` refuses bad set-ups with the contract's exit codes, before loading any weights."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from patchkit.cli.app import run
from tests.helpers import write_fake_model

# Runs the CLI and says on stderr whether torch or the web stack was imported: refusals come first.
RUNNER = (
    "import sys\n"
    "from patchkit.cli.app import run\n"
    "rc = run(sys.argv[1:])\n"
    "heavy = [m for m in ('torch', 'transformers', 'fastapi', 'uvicorn') if m in sys.modules]\n"
    "sys.stderr.write('HEAVY=' + ','.join(heavy) + '\\n')\n"
    "sys.exit(rc)\n"
)


def test_non_loopback_without_a_key_is_refused_in_a_real_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PATCHKIT_API_KEY", raising=False)
    model = write_fake_model(tmp_path / "model")
    r = subprocess.run([sys.executable, "-c", RUNNER, "serve", "--model", str(model), "--host", "0.0.0.0", "--json"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "without an API key" in r.stderr and "PATCHKIT_API_KEY" in r.stderr
    doc = json.loads(r.stdout)
    assert doc == {"ok": False, "error": "usage", "reason": doc["reason"], "hint": doc["hint"], "exit_code": 2}
    assert "PATCHKIT_API_KEY" in doc["hint"]
    assert "HEAVY=\n" in r.stderr, r.stderr  # refused before torch or the web stack loaded


def test_refusals_and_their_exit_codes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("PATCHKIT_API_KEY", raising=False)
    model = write_fake_model(tmp_path / "model")
    bad = tmp_path / "serve.toml"
    bad.write_text("[limits]\nmax_batch = -1\n")
    cases = {
        "bad config": (["--model", str(model), "--config", str(bad)], 6, "max_batch"),
        "missing config": (["--model", str(model), "--config", str(tmp_path / "nope.toml")], 7, "does not exist"),
        "missing model": (["--model", str(tmp_path / "nope")], 7, "config.json"),
        "unknown engine": (["--model", str(model), "--engine", "tgi"], 2, "unknown engine"),
        "vllm without url": (["--model", str(model), "--engine", "vllm"], 2, "--vllm-url"),
        "url without vllm": (["--model", str(model), "--vllm-url", "http://127.0.0.1:1"], 2, "--engine vllm"),
        "bad name": (["--model", str(model), "--name", "a+b"], 2, "--name"),
    }
    for what, (args, code, text) in cases.items():
        assert run(["serve", *args]) == code, what
        assert text in capsys.readouterr().err, what
    (model / "patchkit.lock").write_text("not a lock")
    assert run(["serve", "--model", str(model), "--json"]) == 6  # the lock must verify before serving
    out = capsys.readouterr()
    assert json.loads(out.out)["ok"] is False and "Traceback" not in out.err
