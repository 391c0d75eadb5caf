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
    "import atexit, sys\n"
    "atexit.register(lambda: sys.stderr.write('TORCH-IMPORTED\\n' if 'torch' in sys.modules else ''))\n"
    "from patchkit.cli import main\n"
    "main(sys.argv[1:])\n"
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
    from patchkit.basemodel.fingerprint import fingerprint

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


@pytest.mark.slow
@pytest.mark.torch
def test_the_same_patch_twice_is_refused(kit: Kit, model_dir: Path, tmp_path: Path) -> None:
    a = kit.patch(model_dir, name="acme/twice", seed=5)
    r = _run("generate", "--model", model_dir, "--patch", a, "--patch", a, "--no-lock", "--trust", kit.trust, "hi")
    assert r.returncode == 2 and "applied twice" in r.stderr
    assert "TORCH-IMPORTED" not in r.stderr


@pytest.mark.slow
@pytest.mark.torch
def test_eval_checks_the_patch_before_loading_the_model(kit: Kit, model_dir: Path, tmp_path: Path) -> None:
    stranger = kit.patch(model_dir, name="acme/stranger2", key=kit.other_keys)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "hello"}\n')
    r = _run("eval", "--model", model_dir, "--patch", stranger, "--suite", "toxicity", "--prompts", prompts,
             "--trust", kit.trust, "--out", tmp_path / "m.json")
    assert r.returncode == 4, r.stderr
    assert "TORCH-IMPORTED" not in r.stderr  # refused before any weights (or torch) loaded


@pytest.mark.slow
@pytest.mark.torch
def test_chat_commands_are_never_sent_to_the_model(kit: Kit, model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from patchkit.cli import runtime as cli_runtime
    from patchkit.runtime import generation

    sent: list[object] = []

    def fake_generate(model: object, tok: object, messages: list[dict[str, str]], *args: object, **kwargs: object) -> str:
        sent.append([m["content"] for m in messages])
        if len(sent) == 1:
            raise KeyboardInterrupt  # Ctrl-C while the first reply is written
        return "ok"

    monkeypatch.setattr(generation, "generate", fake_generate)
    monkeypatch.setattr("sys.stdin", io.StringIO("/help\nfirst\n/bogus\nsecond\n/exit\n"))
    cli_runtime.chat(model=model_dir, patch=None, no_lock=True, max_new_tokens=2, temperature=0.0, seed=None,
                     system=None, allow_base_mismatch=False, no_verify=False, token_budget=512, device=None,
                     trust=kit.trust, registry=None, json_=False)
    assert sent == [["first"], ["second"]]  # no /command reached the model; the stopped reply was dropped


@pytest.mark.slow
@pytest.mark.torch
def test_ctrl_c_during_generate_exits_130_without_a_traceback(kit: Kit, model_dir: Path) -> None:
    import signal
    import time

    def as_from_a_terminal() -> None:
        # A child inherits its parent's SIGINT disposition and signal mask; a test runner's worker
        # may ignore or block SIGINT (two fresh `.ci/run`s timed out here, SIGINT never arriving),
        # and a user's Ctrl-C reaches a command with both at their defaults.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    proc = subprocess.Popen([sys.executable, "-m", "patchkit", "generate", "--model", str(model_dir), "--no-lock",
                             "--max-new-tokens", "100000", "tell me a long story"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ),
                            preexec_fn=as_from_a_terminal)
    try:
        deadline = time.monotonic() + 120
        assert proc.stderr is not None
        while time.monotonic() < deadline:  # wait until generation has started
            line = proc.stderr.readline()
            if "no patches applied" in line:
                break
        time.sleep(2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert "interrupted" in err
