"""`python -m patchkit train ... --json` end to end, in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.torch, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "patchkit", "train", *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


def test_cli_trains_and_prints_json(tiny_model_factory: Any, tmp_path: Path, prompts_file: Path, reference_file: Path) -> None:
    out = tmp_path / "out"
    args = ["--base", str(tiny_model_factory("llama")), "--reference", str(reference_file), "--prompts", str(prompts_file),
            "--domain", "harmfulness", "--out", str(out), "--tokens", "6", "--max-steps", "2", "--batch-size", "2",
            "--max-new-tokens", "8", "--init", 'text:"Be safe."', "--seed", "3", "--json"]
    proc = _cli(*args)
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(proc.stdout)
    assert payload["ok"] is True and payload["method"] == "sft+dpo"
    assert payload["num_virtual_tokens"] == 6 and payload["steps"] == {"sft": 2, "dpo": 2}
    training = json.loads((out / "training.json").read_text())
    assert training["init"] == 'text:"Be safe."' and training["seed"] == 3
    assert (out / "adapter_model.safetensors").is_file()

    # Running again into the same directory without --resume is refused (exit 2), files untouched.
    before = (out / "adapter_model.safetensors").read_bytes()
    again = _cli(*args)
    assert again.returncode == 2
    assert json.loads(again.stdout)["ok"] is False
    assert (out / "adapter_model.safetensors").read_bytes() == before


def test_cli_bad_input_exit_codes(tiny_model_factory: Any, tmp_path: Path, prompts_file: Path, reference_file: Path) -> None:
    base = str(tiny_model_factory("llama"))
    common = ["--base", base, "--prompts", str(prompts_file), "--domain", "harmfulness", "--out", str(tmp_path / "o"), "--json"]
    proc = _cli(*common, "--reference", str(reference_file), "--tokens", "0")
    assert proc.returncode == 6
    assert "--tokens must be at least 1" in json.loads(proc.stdout)["reason"]
    proc = _cli(*common, "--reference", str(tmp_path / "missing.jsonl"))
    assert proc.returncode == 7 and "does not exist" in proc.stderr
    proc = _cli(*common, "--reference", str(reference_file), "--stages", "rlhf")
    assert proc.returncode == 6 and "unknown stage 'rlhf'" in proc.stderr
