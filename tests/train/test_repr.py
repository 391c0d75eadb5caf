"""The repr stage: the refusal probe, its loss on the prefix, and the stage inside `train_patch`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from patchkit.errors import InvalidInputError, UsageError
from tests.train.conftest import HARMFUL, REFUSAL

pytestmark = pytest.mark.torch

BENIGN_ANSWER = "Sure, here is a simple recipe: mix flour, water, salt and yeast."
# The reference refuses the first two prompts and answers the other two.
MIXED = [{"prompt": p, "response": REFUSAL if i < 2 else BENIGN_ANSWER} for i, p in enumerate(HARMFUL)]


def _synthetic(n: int = 240, dim: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g) * 3 + 5  # off-centre and scaled, as hidden states are
    w = torch.randn(dim, generator=g)
    y = ((x - 5) @ w + 0.3 * torch.randn(n, generator=g)) > 0
    return x, y


def test_auroc_on_known_cases() -> None:
    from patchkit.train.representation import auroc

    assert auroc([0.1, 0.4, 0.35, 0.8], [False, False, True, True]) == 0.75
    assert auroc([1.0, 2.0, 3.0], [False, True, True]) == 1.0
    assert auroc([3.0, 2.0, 1.0], [False, True, True]) == 0.0
    assert auroc([0.5, 0.5, 0.5, 0.5], [False, True, False, True]) == 0.5  # ties share their rank
    with pytest.raises(InvalidInputError, match="both classes"):
        auroc([0.1, 0.2], [True, True])


def test_probe_separates_a_separable_set_and_fails_on_shuffled_labels() -> None:
    from patchkit.train.representation import fit_probe

    x, y = _synthetic()
    probe = fit_probe(x, y, layer=3, l2=1e-2)
    assert probe.train_auroc > 0.97 and probe.cv_auroc is not None and probe.cv_auroc > 0.93, probe.to_dict()
    assert probe.n_refuse == int(y.sum()) and probe.n_answer == int((~y).sum())
    # The probe's logit is linear in the raw hidden state, and its sign agrees with the labels.
    acc = float(((probe.logits(x) > 0) == y).float().mean())
    assert acc > 0.9
    shuffled = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(1))]
    bad = fit_probe(x, shuffled, layer=3, l2=1e-2)
    assert bad.cv_auroc is not None and bad.cv_auroc < 0.7, bad.to_dict()


def test_probe_needs_both_classes() -> None:
    from patchkit.train.representation import fit_probe

    x, _ = _synthetic(n=20)
    with pytest.raises(InvalidInputError, match="refuses and prompts it answers"):
        fit_probe(x, torch.ones(20, dtype=torch.bool), layer=1, l2=1e-2)


def test_default_layer_is_about_55_percent_deep() -> None:
    from patchkit.train.representation import default_layer

    assert default_layer(30) == 17 and default_layer(2) == 1 and default_layer(1) == 1 and default_layer(12) == 7


def _setup(base: Path) -> tuple[Any, Any, list[tuple[int, ...]]]:
    from patchkit.lm.loading import load_model
    from patchkit.train.generation import encode_prompt, format_prompt
    from patchkit.train.model import PrefixLM, initial_prefix

    model, tok = load_model(base, device="cpu", dtype=torch.float32)
    ids = [tuple(encode_prompt(tok, format_prompt(tok, p))) for p in HARMFUL]
    lm = PrefixLM(model, initial_prefix(model, tok, 'text:"Be safe."', 4, 0))
    return lm, tok, ids


def test_hidden_layer_is_the_models_own_hidden_state(steerable_model: Path) -> None:
    from patchkit.train.representation import prompt_hidden

    lm, tok, ids = _setup(steerable_model)
    got = prompt_hidden(lm, ids, int(tok.pad_token_id), torch.device("cpu"), 1, use_prefix=False, batch_size=4)  # padded
    for i, row in enumerate(ids):
        with torch.no_grad():
            states = lm.base(input_ids=torch.tensor([row]), output_hidden_states=True).hidden_states
        assert torch.allclose(got[i], states[1][0, -1], atol=1e-4)
    with_prefix = prompt_hidden(lm, ids, int(tok.pad_token_id), torch.device("cpu"), 1, use_prefix=True)
    assert not torch.allclose(with_prefix, got, atol=1e-3)


def test_a_repr_step_lowers_the_loss_and_changes_only_the_prefix(steerable_model: Path) -> None:
    from patchkit.train.representation import fit_probe, prompt_hidden, repr_batch_loss

    lm, tok, ids = _setup(steerable_model)
    pad, cpu = int(tok.pad_token_id), torch.device("cpu")
    base_h = prompt_hidden(lm, ids, pad, cpu, 1, use_prefix=False)
    labels = torch.tensor([True, True, False, False])
    probe = fit_probe(base_h, labels, layer=1, l2=1e-2)
    weights = {k: v.clone() for k, v in lm.base.state_dict().items()}
    start_prefix = lm.prefix.detach().clone()

    def loss() -> torch.Tensor:
        return repr_batch_loss(lm, ids, base_h, labels, probe, pad, cpu, margin=4.0, keep=1.0)

    with torch.no_grad():
        before = float(loss())
    opt = torch.optim.Adam([lm.prefix], lr=0.05)
    for _ in range(5):
        opt.zero_grad()
        loss().backward()  # type: ignore[no-untyped-call]
        opt.step()
    with torch.no_grad():
        after = float(loss())
    assert after < before - 1e-3, (before, after)
    assert not torch.equal(lm.prefix.detach(), start_prefix)
    after_weights = lm.base.state_dict()
    assert set(after_weights) == set(weights)
    assert all(torch.equal(after_weights[k], v) for k, v in weights.items())
    assert all(p.grad is None for p in lm.base.parameters())


def test_keep_term_counts_only_the_change_off_the_probe_direction() -> None:
    from patchkit.train.representation import fit_probe, repr_loss

    x, y = _synthetic(n=60, dim=8)
    probe = fit_probe(x, y, layer=1, l2=1e-2)
    u = probe.direction.float()
    h0 = x[:4].float()
    along = h0 + 2.0 * u  # moved along the probe only
    _, parts = repr_loss(along, h0, y[:4], probe, margin=0.0, keep=1.0)
    assert parts["keep"] < 1e-6
    off = torch.randn(8, generator=torch.Generator().manual_seed(3))
    off = off - (off @ u) * u
    _, parts = repr_loss(h0 + off, h0, y[:4], probe, margin=0.0, keep=1.0)
    assert parts["keep"] > 1e-3


def _train(base: Path, out: Path, **kw: Any) -> Any:
    from patchkit.train import train_patch

    opts: dict[str, Any] = {"stages": "repr,sft", "max_new_tokens": 8, "batch_size": 2, "lr": 0.05, "tokens": 4,
                            "generation_batch_size": 4, "max_steps": 3, "repr_epochs": 2}
    opts.update(kw)
    ref = opts.pop("reference", MIXED)
    domain = opts.pop("domain", "harmfulness")
    return train_patch(base, ref, HARMFUL, domain=domain, out=out, **opts)


def test_repr_stage_runs_first_and_is_recorded(steerable_model: Path, tmp_path: Path) -> None:
    res = _train(steerable_model, tmp_path / "r")
    assert res.method == "repr+sft" and list(res.loss_curves) == ["repr", "sft"]
    assert len(res.loss_curves["repr"]) == 3 and len(res.loss_curves["sft"]) == 2  # 2 epochs capped at 3; 4 rows in 2s
    info = json.loads((tmp_path / "r" / "training.json").read_text())
    rep = info["repr"]
    assert rep["layer"] == 1 and rep["l2"] == 0.01 and rep["n_refuse"] == 2 and rep["n_answer"] == 2
    assert 0.0 <= rep["train_auroc"] <= 1.0 and rep["margin"] == 4.0 and rep["keep"] == 1.0
    assert set(rep["mean_logit"]) == {"base", "patched"}
    assert info["hyperparameters"]["stages"] == ["repr", "sft"] and info["steps"]["repr"] == 3
    assert info["hyperparameters"]["repr_probe"]["layer"] == 1  # what `patchkit build` carries
    sft_only = _train(steerable_model, tmp_path / "s", stages="sft")
    assert sft_only.training["repr"] is None and "repr" not in sft_only.loss_curves
    assert "repr_probe" not in sft_only.training["hyperparameters"]

    from patchkit.artifact.build import build_artifact

    manifest = build_artifact(tmp_path / "r", tmp_path / "artifact", name="acme/safe", version="1.0.0", domain="harmfulness",
                              base_model=steerable_model)
    assert manifest.training.method == "repr+sft"
    assert manifest.training.hyperparameters["repr_probe"]["train_auroc"] == rep["train_auroc"]


def test_repr_stage_pushes_the_probe_logits_apart(steerable_model: Path, tmp_path: Path) -> None:
    res = _train(steerable_model, tmp_path / "r", stages="repr", repr_epochs=10, max_steps=None, lr=0.05)
    logits = res.training["repr"]["mean_logit"]
    base_gap = logits["base"]["refuse"] - logits["base"]["answer"]
    patched_gap = logits["patched"]["refuse"] - logits["patched"]["answer"]
    assert patched_gap > base_gap, logits
    assert res.loss_curves["repr"][-1] < res.loss_curves["repr"][0]


def test_repr_resume_is_exact(tiny_model_factory: Any, tmp_path: Path) -> None:
    from patchkit.train import StopTraining

    base = tiny_model_factory("llama")
    full = _train(base, tmp_path / "full")
    with pytest.raises(StopTraining):
        _train(base, tmp_path / "r", save_every=1, stop_after=2)
    resumed = _train(base, tmp_path / "r", save_every=1, resume=True)
    assert torch.equal(resumed.prefix, full.prefix)
    assert resumed.training["repr"] == full.training["repr"]


def test_repr_refuses_what_it_cannot_train_on(steerable_model: Path, tmp_path: Path) -> None:
    all_refuse = [{"prompt": p, "response": REFUSAL} for p in HARMFUL]
    with pytest.raises(InvalidInputError, match="refuses and prompts it answers"):
        _train(steerable_model, tmp_path / "a", reference=all_refuse)
    with pytest.raises(UsageError, match="needs --domain harmfulness"):
        _train(steerable_model, tmp_path / "b", domain="bias")
    with pytest.raises(InvalidInputError, match="past the model's 2 layers"):
        _train(steerable_model, tmp_path / "c", repr_layer=3)


def test_bad_stage_names_are_refused_with_the_known_stages(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from patchkit.cli.app import run
    from patchkit.train.config import make_config, parse_stages

    assert parse_stages("dpo, repr,sft") == ("repr", "sft", "dpo")
    assert make_config().stages == ("sft", "dpo")  # the paper's method stays the default
    with pytest.raises(InvalidInputError, match=r"unknown stage 'rpr' \(known: repr, sft, dpo\)"):
        parse_stages("rpr,sft")
    with pytest.raises(InvalidInputError, match="listed twice"):
        parse_stages("repr,sft,repr")
    rc = run(["train", "--base", str(tmp_path), "--reference", "x.jsonl", "--prompts", "p.jsonl", "--domain", "harmfulness",
              "--out", str(tmp_path / "o"), "--stages", "repr,rlhf", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 6 and doc["error"] == "invalid-input" and "unknown stage 'rlhf'" in doc["reason"]
    assert "repr,sft,dpo" in doc["hint"]
    rc = run(["train", "--base", str(tmp_path), "--reference", "x.jsonl", "--prompts", "p.jsonl", "--domain", "harmfulness",
              "--out", str(tmp_path / "o"), "--repr-l2", "-1", "--json"])
    assert rc == 6 and "--repr-l2" in json.loads(capsys.readouterr().out)["reason"]
