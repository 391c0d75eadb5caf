"""`patchkit train --device/--dtype`: one spelling per dtype, resume signatures unchanged, bf16 on the CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from patchkit.errors import UsageError
from patchkit.train.config import TrainConfig, make_config
from tests.train.conftest import HARMFUL, REFUSAL


def test_bf16_is_dtype_bfloat16_and_the_device_is_not_in_the_signature() -> None:
    assert make_config(dtype="bfloat16") == make_config(bf16=True)
    assert TrainConfig(dtype="bfloat16").hyperparameters()["bf16"] is True
    assert TrainConfig().dtype == "float32" and TrainConfig(bf16=True).dtype == "bfloat16"
    # Older checkpoints were signed without these keys: a float32 or bfloat16 run still matches them,
    # and the machine a run resumes on does not matter.
    plain = TrainConfig().training_signature()
    assert "dtype" not in plain and "device" not in plain
    assert TrainConfig(device="cuda", dtype="float32").training_signature() == plain
    assert TrainConfig(dtype="bfloat16").training_signature() == TrainConfig(bf16=True).training_signature() != plain
    assert TrainConfig(dtype="float16").training_signature()["dtype"] == "float16"
    hp = TrainConfig(device="cpu", dtype="bfloat16").hyperparameters()
    assert hp["device"] == "cpu" and hp["dtype"] == "bfloat16"


@pytest.mark.parametrize(("opts", "says"), [({"dtype": "float64"}, "unknown --dtype"),
                                            ({"device": "gpu0"}, "unknown --device"),
                                            ({"bf16": True, "dtype": "float16"}, "disagree")])
def test_bad_device_or_dtype_is_a_usage_error(opts: dict[str, Any], says: str) -> None:
    with pytest.raises(UsageError, match=says) as exc:
        make_config(**opts)
    assert exc.value.hint


def test_the_flags_exist() -> None:
    from typer.main import get_command

    from patchkit.cli.app import app

    cmd = get_command(app).commands["train"]  # type: ignore[attr-defined]
    opts = {o for p in cmd.params for o in getattr(p, "opts", [])}
    assert {"--device", "--dtype", "--bf16"} <= opts


@pytest.mark.torch
def test_cuda_without_one_fails_in_one_line(tiny_model_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from patchkit.train import train_patch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    ref = [{"prompt": p, "response": REFUSAL} for p in HARMFUL]
    with pytest.raises(UsageError, match="no CUDA GPU is available"):
        train_patch(tiny_model_factory("llama"), ref, HARMFUL, domain="harmfulness", out=tmp_path / "o", device="cuda",
                    tokens=4, max_steps=1, stages="sft")
    assert not (tmp_path / "o" / "adapter_model.safetensors").exists()


@pytest.mark.torch
def test_bfloat16_on_cpu_trains_a_couple_of_steps(tiny_model_factory: Any, tmp_path: Path) -> None:
    import torch

    from patchkit.train import train_patch

    ref = [{"prompt": p, "response": REFUSAL} for p in HARMFUL]
    res = train_patch(tiny_model_factory("llama"), ref, HARMFUL, domain="harmfulness", out=tmp_path / "o", device="cpu",
                      dtype="bfloat16", tokens=4, batch_size=2, max_new_tokens=8, max_steps=2, stages="sft", lr=0.05)
    assert len(res.loss_curves["sft"]) == 2 and all(torch.isfinite(torch.tensor(res.loss_curves["sft"])))
    assert res.prefix.dtype == torch.float32 and torch.isfinite(res.prefix).all()
    assert not torch.equal(res.prefix, res.initial_prefix)  # it trained
    hp = res.training["hyperparameters"]
    assert hp["dtype"] == "bfloat16" and hp["bf16"] is True and hp["device"] == "cpu"
