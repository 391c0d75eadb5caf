"""The runtime commands as a user runs them: `python -m patchkit …` in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import ZERO_DIGEST, pk
from tests.runtime._support import Kit

# Runs the CLI and says on stderr whether torch was imported: refusals must come before it.
RUNNER = (
    "import sys\n"
    "from patchkit.cli.app import run\n"
    "rc = run(sys.argv[1:])\n"
    "sys.stderr.write('TORCH-IMPORTED\\n' if 'torch' in sys.modules else '')\n"
    "sys.exit(rc)\n"
)


def _run(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", RUNNER, *map(str, args)], capture_output=True, text=True,
                          env=dict(os.environ), timeout=120)


@pytest.fixture
def model_dir(tiny_model_factory: Callable[[str], Path]) -> Path:
    return tiny_model_factory("llama")


@pytest.mark.slow
@pytest.mark.torch
def test_generate_refusals_exit_codes_before_torch(kit: Kit, model_dir: Path, tmp_path: Path) -> None:
    from patchkit.fingerprint import fingerprint

    good = kit.patch(model_dir, name="acme/good")
    cases = {
        "wrong base": (kit.patch(None, name="acme/wrongbase", base_digest=ZERO_DIGEST), [], 5),
        "untrusted": (kit.patch(model_dir, name="acme/stranger", key=kit.other_keys), [], 4),
        "unsigned": (kit.patch(model_dir, name="acme/unsigned", sign=False), [], 3),
        "over budget": (good, ["--token-budget", "3"], 6),
        "hidden size": (kit.patch(None, name="acme/narrow", hidden=32, base_digest=fingerprint(model_dir)), [], 5),
        "missing": (tmp_path / "nope", [], 7),
    }
    for what, (patch, extra, code) in cases.items():
        r = _run("generate", "--model", model_dir, "--patch", patch, "--no-lock", "--trust", kit.trust, *extra, "hello")
        assert r.returncode == code, (what, r.returncode, r.stderr)
        assert r.stdout == "", what
        assert "TORCH-IMPORTED" not in r.stderr, f"{what}: refused only after torch loaded"
        assert "patchkit:" in r.stderr and "Traceback" not in r.stderr, what
    r = _run("generate", "--model", model_dir, "--patch", good, "--no-lock", "--trust", kit.trust, "--json", "--max-new-tokens", "2", "hi")
    assert r.returncode == 0, r.stderr
    assert "TORCH-IMPORTED" in r.stderr  # the runner really detects torch


@pytest.mark.slow
@pytest.mark.torch
def test_generate_streams_and_json(kit: Kit, model_dir: Path) -> None:
    a = kit.patch(model_dir, name="acme/a", seed=3)
    base = ["generate", "--model", model_dir, "--patch", a, "--trust", kit.trust, "--max-new-tokens", "12",
            "--system", "be kind", "How do I bake bread?"]
    r = pk(*base, "--json")
    assert r.returncode == 0, r.stderr
    payload = json.loads(r.stdout)
    assert payload["patches"][0]["name"] == "acme/a" and payload["patches"][0]["digest"].startswith("sha256:")
    assert payload["text"]
    streamed = pk(*base)
    assert streamed.returncode == 0, streamed.stderr
    assert streamed.stdout.strip() == payload["text"].strip()
    assert "applying acme/a@1.0.0" in streamed.stderr


@pytest.mark.slow
@pytest.mark.torch
def test_chat_keeps_the_conversation(kit: Kit, model_dir: Path) -> None:
    import patchkit

    a = kit.patch(model_dir, name="acme/a", seed=3)
    r = pk("chat", "--model", model_dir, "--patch", a, "--trust", kit.trust, "--max-new-tokens", "6", "--json",
           input="hello\n\nHow do I bake bread?\n/exit\nnever read\n")
    assert r.returncode == 0, r.stderr
    turns = json.loads(r.stdout)["turns"]
    assert [t["user"] for t in turns] == ["hello", "How do I bake bread?"]
    model, tok = patchkit.load(model_dir, [a], trust=kit.trust, device="cpu")
    msgs = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": turns[0]["assistant"]},
            {"role": "user", "content": "How do I bake bread?"}]
    assert patchkit.generate(model, tok, msgs, max_new_tokens=6) == turns[1]["assistant"]


@pytest.mark.slow
@pytest.mark.torch
def test_compose_sign_verify_export_cli(kit: Kit, model_dir: Path, tmp_path: Path) -> None:
    a = kit.patch(model_dir, name="acme/a", seed=1)
    b = kit.patch(model_dir, name="acme/b", seed=2)
    out = tmp_path / "ab"
    r = pk("compose", a, b, "--name", "acme/ab", "--version", "1.0.0", "--out", out, "--trust", kit.trust, "--json")
    assert r.returncode == 0, r.stderr
    assert [c["name"] for c in json.loads(r.stdout)["components"]] == ["acme/a", "acme/b"]
    assert pk("verify", out, "--trust", kit.trust).returncode == 3  # unsigned until signed
    assert pk("sign", out, "--key", kit.keys / "private.pem").returncode == 0
    v = pk("verify", out, "--trust", kit.trust, "--base-model", model_dir, "--json")
    assert v.returncode == 0, v.stderr
    e = pk("export", out, "--format", "peft", "--out", tmp_path / "peft", "--trust", kit.trust, "--json")
    assert e.returncode == 0, e.stderr
    assert json.loads(e.stdout)["num_virtual_tokens"] == 8
    assert pk("export", out, "--format", "onnx", "--out", tmp_path / "x", "--trust", kit.trust).returncode == 2
    over = pk("compose", a, b, "--name", "acme/ab", "--version", "1.0.1", "--out", tmp_path / "o", "--trust", kit.trust,
              "--token-budget", "5")
    assert over.returncode == 6 and not (tmp_path / "o").exists()
