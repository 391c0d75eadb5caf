"""`TrainState`: the one save and the one load of a run's progress agree, field by field."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.torch


def test_save_then_resume_restores_every_field_and_the_rng(tmp_path: Path) -> None:
    from patchkit.train.checkpoint import TrainState
    from patchkit.train.selection import Tracker, ValidationPoint

    tracker = Tracker(1.0)
    tracker.add(ValidationPoint("sft", 2, 0.5, 0.25, 0.0, 0.25), torch.ones(2, 3))
    state = TrainState.fresh(("sft", "dpo"), tracker)
    state.done.update(sft=2, dpo=1)
    state.curves = {"sft": [1.5, 1.25], "dpo": [0.5]}
    state.ref_prefix, state.ref_lp, state.policy_prefix = torch.zeros(2, 3), torch.tensor([-1.0, -2.0]), torch.full((2, 3), 2.0)
    prefix = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    opt = torch.optim.AdamW([torch.nn.Parameter(prefix.clone())], lr=0.1)
    path = state.save(tmp_path, signature="sig", prefix=prefix, stage="dpo", optimizer=opt)
    assert path.name == "checkpoint-00000003.pt"
    expected = torch.rand(4)  # the RNG state saved above, drawn from

    again = TrainState.fresh(("sft", "dpo"), Tracker(1.0))
    got = again.resume(tmp_path, signature="sig")
    assert got is not None and torch.equal(got, prefix)
    assert torch.equal(torch.rand(4), expected)
    assert again.done == {"repr": 0, "sft": 2, "dpo": 1} and again.global_step == 3
    assert again.curves == state.curves
    for name in ("ref_prefix", "ref_lp", "policy_prefix"):
        assert torch.equal(getattr(again, name), getattr(state, name)), name
    assert again.tracker is not None and again.tracker.points == tracker.points
    assert again.optimizer is not None and again.optimizer["param_groups"] == opt.state_dict()["param_groups"]
    assert again.resumed_from == "checkpoint-00000003.pt"


def test_resume_refuses_another_runs_checkpoint_and_finds_none_in_an_empty_dir(tmp_path: Path) -> None:
    from patchkit.errors import InvalidInputError
    from patchkit.train.checkpoint import TrainState

    assert TrainState.fresh(("sft",), None).resume(tmp_path, signature="a") is None
    TrainState.fresh(("sft",), None).save(tmp_path, signature="a", prefix=torch.zeros(1, 2), stage="sft", optimizer=None)
    with pytest.raises(InvalidInputError, match="other settings"):
        TrainState.fresh(("sft",), None).resume(tmp_path, signature="b")
