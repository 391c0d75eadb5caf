"""Training on two processes (torchrun, gloo on CPU) gives the loss curve of one process.

Each step's batch is split across the ranks, DDP averages the gradients, and the logged loss is
the mean over ranks, so with an even batch the two runs do the same arithmetic up to float
reduction order.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest


def _train(model: Path, prompts: Path, reference: Path, out: Path, nproc: int) -> dict[str, Any]:
    args = ["-m", "patchkit", "train", "--base", str(model), "--reference", str(reference), "--prompts", str(prompts),
            "--domain", "harmfulness", "--out", str(out), "--tokens", "4", "--batch-size", "4", "--max-steps", "3",
            "--max-new-tokens", "6", "--sft-epochs", "3", "--seed", "0", "--json"]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    cmd = [*launcher, *args] if nproc > 1 else [sys.executable, *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PATCHKIT_NO_PROGRESS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return dict(json.loads((out / "training.json").read_text()))


@pytest.mark.slow
@pytest.mark.torch
def test_torchrun_two_processes_match_one(tiny_model_factory: Any, tmp_path: Path, prompts_file: Path,
                                          reference_file: Path) -> None:
    model = tiny_model_factory("llama")
    one = _train(model, prompts_file, reference_file, tmp_path / "one", 1)
    two = _train(model, prompts_file, reference_file, tmp_path / "two", 2)
    assert one["processes"] == 1 and two["processes"] == 2
    for stage in ("sft", "dpo"):
        a, b = one["loss_curves"][stage], two["loss_curves"][stage]
        assert len(a) == len(b) > 0
        assert all(abs(x - y) <= 1e-4 * max(1.0, abs(x)) for x, y in zip(a, b, strict=True)), (stage, a, b)
