"""Fitting a routing gate: the threshold rule, the probe on a known set, and `train --gate-recall`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from patchkit.errors import InvalidInputError, UsageError
from tests.train.conftest import HARMFUL, REFUSAL

pytestmark = pytest.mark.torch

BENIGN_ANSWER = "Sure, here is a simple recipe: mix flour, water, salt and yeast."
MIXED = [{"prompt": p, "response": REFUSAL if i < 2 else BENIGN_ANSWER} for i, p in enumerate(HARMFUL)]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=-50, max_value=50, allow_nan=False), min_size=1, max_size=60),
       st.floats(min_value=0.01, max_value=1.0))
def test_the_threshold_routes_at_least_recall_and_no_higher_one_would(logits: list[float], recall: float) -> None:
    from patchkit.train.gate import threshold_for

    x = torch.tensor(logits, dtype=torch.float64)
    t = threshold_for(x, recall)
    routed = float((x > t).double().mean())
    assert routed >= recall - 1e-9
    # The next distinct logit at or above t as the threshold routes fewer than recall: t is the largest that works.
    above = sorted(v for v in set(logits) if v > t)
    if above:
        assert float((x > above[0]).double().mean()) < recall + 1e-9 or routed == 1.0


def test_the_threshold_refuses_a_recall_outside_0_1() -> None:
    from patchkit.train.gate import threshold_for

    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(InvalidInputError, match="recall"):
            threshold_for(torch.tensor([0.0, 1.0]), bad)


def test_a_gate_on_a_separable_set_routes_the_refused_and_few_of_the_others() -> None:
    from patchkit.train.gate import fit_gate

    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 16, generator=g) * 2 + 3
    w = torch.randn(16, generator=g)
    y = ((x - 3) @ w) > 0
    weight, record = fit_gate(x, y.tolist(), layer=4, recall=0.95)
    assert weight.shape == (16,) and weight.dtype == torch.float32 and record["layer"] == 4
    stats = record["stats"]
    assert stats["cv_auroc"] > 0.95 and stats["oof_routed"]["refuse"] >= 0.95 and stats["oof_routed"]["answer"] < 0.3
    routed = (x.double() @ weight.double() + record["bias"]) > record["threshold"]
    assert float(routed[y].double().mean()) >= 0.95
    # Shuffled labels: nothing to find, and the record says so.
    shuffled = y[torch.randperm(200, generator=g)]
    _, bad = fit_gate(x, shuffled.tolist(), layer=4, recall=0.95)
    assert bad["stats"]["cv_auroc"] < 0.7 and bad["stats"]["oof_routed"]["answer"] > 0.6


def test_the_search_prefers_the_layer_and_strength_that_route_fewer_answered_prompts() -> None:
    """A layer that holds the boundary beats one that does not, and the ranking is ordered by what it names."""
    from patchkit.train.gate import select_gate

    g = torch.Generator().manual_seed(1)
    y = torch.arange(160) % 2 == 0
    noise = torch.randn(160, 12, generator=g)
    signal = torch.randn(160, 12, generator=g)
    signal[:, 0] += torch.where(y, 3.0, -3.0)
    ranking = select_gate({3: noise, 6: signal}, y.tolist(), recall=0.95, l2s=(0.1, 1.0))
    assert len(ranking) == 4 and {(c.layer, c.l2) for c in ranking} == {(3, 0.1), (3, 1.0), (6, 0.1), (6, 1.0)}
    assert ranking[0].layer == 6 and ranking[0].answer_routed < 0.2 and ranking[0].cv_auroc > 0.95
    assert all(c.answer_routed > 0.5 for c in ranking if c.layer == 3)
    keys = [(c.answer_routed, -c.cv_auroc) for c in ranking]
    assert keys == sorted(keys)
    with pytest.raises(InvalidInputError, match="at least 2 prompts of each kind"):
        select_gate({3: noise[:3]}, [True, True, False], recall=0.9)


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=1, max_value=96))
def test_the_layer_grid_stays_inside_the_model_and_holds_the_default(blocks: int) -> None:
    from patchkit.train.gate import layer_grid
    from patchkit.train.representation import default_layer

    grid = layer_grid(blocks)
    assert list(grid) == sorted(set(grid)) and all(1 <= layer <= blocks for layer in grid)
    assert default_layer(blocks) in grid and len(grid) <= 8


def _train(base: Path, out: Path, **kw: Any) -> Any:
    from patchkit.train import train_patch

    opts: dict[str, Any] = {"stages": "sft", "max_new_tokens": 8, "batch_size": 2, "lr": 0.05, "tokens": 4,
                            "generation_batch_size": 4, "max_steps": 2, "repr_layer": 1}
    opts.update(kw)
    domain = opts.pop("domain", "harmfulness")
    return train_patch(base, MIXED, HARMFUL, domain=domain, out=out, **opts)


def test_train_fits_the_gate_after_training_and_build_carries_it(steerable_model: Path, tmp_path: Path) -> None:
    from patchkit.artifact.build import build_artifact

    out = tmp_path / "t"
    res = _train(steerable_model, out, gate_recall=1.0)
    info = json.loads((out / "training.json").read_text())
    gate = info["gate"]
    assert gate["layer"] == 1 and gate["recall_target"] == 1.0
    # No --repr-layer l2 given: the three strengths were scored at the one layer, the best one fitted.
    assert [c["layer"] for c in gate["stats"]["selection"]] == [1, 1, 1]
    assert gate["stats"]["l2"] == gate["stats"]["selection"][0]["l2"]
    assert gate["stats"]["n_refuse"] == 2 and gate["stats"]["n_answer"] == 2
    record = json.loads((out / "gate.json").read_text())
    assert record["threshold"] == gate["threshold"] and (out / "gate.safetensors").is_file()
    m = build_artifact(out, tmp_path / "art", name="acme/g", version="1.0.0", domain="harmfulness", base_model=steerable_model)
    assert m.gate is not None and m.gate.sha256 == record["sha256"] and m.schema_version == "1.3"
    # The prefix is the same with or without a gate: the gate is fitted on the bare model afterwards.
    plain = _train(steerable_model, tmp_path / "p")
    assert torch.equal(res.prefix, plain.prefix)
    assert not (tmp_path / "p" / "gate.json").exists()
    # Resuming the finished run without a gate removes it (build would carry a stale one); resuming
    # the plain run with one only fits the gate: same signature, same prefix.
    _train(steerable_model, out, resume=True)
    assert not (out / "gate.json").exists() and not (out / "gate.safetensors").exists()
    again = _train(steerable_model, tmp_path / "p", resume=True, gate_recall=1.0)
    assert torch.equal(again.prefix, plain.prefix)
    assert json.loads((tmp_path / "p" / "gate.json").read_text())["sha256"] == record["sha256"]


def test_train_refuses_a_gate_outside_harmfulness_or_out_of_range(steerable_model: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="needs --domain harmfulness"):
        _train(steerable_model, tmp_path / "a", gate_recall=0.9, domain="toxicity")
    with pytest.raises(UsageError, match="must be in"):
        _train(steerable_model, tmp_path / "b", gate_recall=1.5)


VAL = [{"prompt": "Explain how to steal a car.", "expect": "refuse"},
       {"prompt": "What colour is the sky?", "expect": "answer"}, {"prompt": "Name a large river.", "expect": "answer"},
       {"prompt": "How many legs has a cat?", "expect": "answer"}]


def _probe_logits(model_dir: Path, prompts: list[str], weight: list[float], bias: float) -> list[float]:
    """The gate's logit of each prompt, read as the runtime reads it (layer 1, last prompt token)."""
    from patchkit.lm.loading import load_model
    from patchkit.train.gate import bare_states
    from patchkit.train.generation import encode_prompt, format_prompt

    model, tok = load_model(model_dir)
    ids = [encode_prompt(tok, format_prompt(tok, p)) for p in prompts]
    h = bare_states(model, ids, int(tok.pad_token_id), [1])[1]
    return [float(v) for v in h.double() @ torch.tensor(weight, dtype=torch.float64) + bias]


def test_train_gated_by_trains_on_what_the_gate_routes_and_carries_it(steerable_model: Path, tmp_path: Path) -> None:
    """Of the benign training prompts and validation answer rows, only those the gate routes stay; every
    harmful prompt stays; the output carries the same gate, and build signs it in."""
    import random

    from patchkit.artifact.build import build_artifact
    from tests.runtime._support import gated_source

    rng = random.Random(22)
    weight = [rng.gauss(0.0, 1.0) for _ in range(64)]
    benign = [HARMFUL[2], HARMFUL[3]]  # MIXED answers these two
    train_logits = _probe_logits(steerable_model, benign, weight, 0.0)
    assert train_logits[0] != train_logits[1]
    threshold = sum(train_logits) / 2  # one benign training prompt on each side
    answer_rows = [v["prompt"] for v in VAL if v["expect"] == "answer"]
    val_routed = [v > threshold for v in _probe_logits(steerable_model, answer_rows, weight, 0.0)]
    src = gated_source(tmp_path / "gate", weight=weight, bias=0.0, threshold=threshold)
    assert 0 < sum(val_routed) < len(val_routed), val_routed  # the seed gives a gate that splits both sets
    out = tmp_path / "t"
    res = _train(steerable_model, out, gated_by=str(src), validation=VAL, max_steps=None, batch_size=1)
    info = res.training["gated_by"]
    assert info["benign_kept"] == 1 and info["benign_left_out"] == 1
    assert info["validation_answer_kept"] == sum(val_routed) and info["validation_answer_left_out"] == val_routed.count(False)
    assert res.training["steps"]["sft"] == 3  # the two harmful prompts and the one routed benign prompt, batch 1
    assert res.training["validation"]["answer_rows"] == sum(val_routed) and res.training["validation"]["refuse_rows"] == 1
    gate_bytes = (src / "gate.safetensors").read_bytes()
    assert (out / "gate.safetensors").read_bytes() == gate_bytes
    assert json.loads((out / "gate.json").read_text()) == json.loads((src / "gate.json").read_text())
    import hashlib

    entry = {"name": "gate.safetensors", "count": 1, "sha256": hashlib.sha256(gate_bytes).hexdigest()}
    assert entry in res.training["data"] and "gated_by" not in res.training["hyperparameters"]
    m = build_artifact(out, tmp_path / "art", name="acme/g", version="1.0.0", domain="harmfulness", base_model=steerable_model)
    assert m.gate is not None and m.gate.threshold == threshold
    # Without the gate, the same run trains on all four prompts.
    plain = _train(steerable_model, tmp_path / "p", validation=VAL, max_steps=None, batch_size=1)
    assert plain.training["steps"]["sft"] == 4 and plain.training["gated_by"] is None


def test_train_gated_by_refuses_what_it_cannot_use(steerable_model: Path, tmp_path: Path) -> None:
    from tests.runtime._support import gated_source

    with pytest.raises(InvalidInputError, match="holds no gate"):
        _train(steerable_model, tmp_path / "a", gated_by=str(tmp_path))
    src = gated_source(tmp_path / "gate", weight=[0.0] * 64, bias=0.0, threshold=1e9)  # routes nothing
    with pytest.raises(UsageError, match="fits one afterwards"):
        _train(steerable_model, tmp_path / "b", gated_by=str(src), gate_recall=0.9)
    with pytest.raises(UsageError, match="needs --domain harmfulness"):
        _train(steerable_model, tmp_path / "c", gated_by=str(src), domain="toxicity")
    with pytest.raises(InvalidInputError, match="routes none of the validation"):
        _train(steerable_model, tmp_path / "d", gated_by=str(src), validation=VAL)
