"""Training: learning signal, determinism, resume, cache, outputs (tiny llama, few steps)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from patchkit.lm.loading import load_causal_lm
from tests.train.conftest import HARMFUL, REFUSAL

pytestmark = pytest.mark.torch

FAST: dict[str, Any] = {"tokens": 8, "batch_size": 2, "max_new_tokens": 16, "lr": 0.05}


def _train(base: Path, out: Path, reference: Any = None, **kw: Any) -> Any:
    from patchkit.train import train_patch

    ref = reference if reference is not None else [{"prompt": p, "response": REFUSAL} for p in HARMFUL]
    opts = {**FAST, **kw}
    return train_patch(base, ref, HARMFUL, domain="harmfulness", out=out, **opts)


def test_sft_lowers_reference_response_loss(steerable_model: Path, tmp_path: Path) -> None:
    from patchkit.train.metrics import response_loss

    base = steerable_model
    res = _train(base, tmp_path / "out", stages="sft", sft_epochs=5)
    assert len(res.loss_curves["sft"]) == 10
    before = response_loss(base, res.initial_prefix, HARMFUL, [REFUSAL] * 4, max_new_tokens=16)
    after = response_loss(base, res.prefix, HARMFUL, [REFUSAL] * 4, max_new_tokens=16)
    assert after < before - 0.5, (before, after)
    assert not torch.equal(res.prefix, res.initial_prefix)


def test_dpo_widens_chosen_rejected_margin(steerable_model: Path, tmp_path: Path) -> None:
    from patchkit.train.metrics import base_responses, pair_margins

    base = steerable_model
    res = _train(base, tmp_path / "out", stages="dpo", dpo_epochs=5)
    assert res.training["dpo_pairs"]["kept"] == 4
    rejected = base_responses(base, HARMFUL, max_new_tokens=16)  # cached by training: no generation here
    before = pair_margins(base, res.initial_prefix, HARMFUL, [REFUSAL] * 4, rejected, max_new_tokens=16)
    after = pair_margins(base, res.prefix, HARMFUL, [REFUSAL] * 4, rejected, max_new_tokens=16)
    assert sum(after) / 4 > sum(before) / 4 + 1.0, (before, after)
    assert all(a > b for a, b in zip(after, before, strict=True))
    # With the SFT-frozen reference (= the starting prefix here) the first DPO loss is log 2.
    assert res.loss_curves["dpo"][0] == pytest.approx(0.6931, abs=1e-3)
    assert res.loss_curves["dpo"][-1] < res.loss_curves["dpo"][0]


def test_same_seed_bit_identical_other_seed_differs(tiny_model_factory: Any, tmp_path: Path) -> None:
    base = tiny_model_factory("llama")
    a = _train(base, tmp_path / "a", max_steps=3, seed=7)
    b = _train(base, tmp_path / "b", max_steps=3, seed=7)
    c = _train(base, tmp_path / "c", max_steps=3, seed=8)
    assert torch.equal(a.prefix, b.prefix)
    assert a.loss_curves == b.loss_curves
    assert not torch.equal(a.prefix, c.prefix)
    from safetensors.torch import load_file

    assert torch.equal(load_file(str(tmp_path / "a" / "adapter_model.safetensors"))["prompt_embeddings"], a.prefix)


@pytest.mark.slow
def test_killed_and_resumed_equals_uninterrupted(tiny_model_factory: Any, tmp_path: Path) -> None:
    from patchkit.train import StopTraining

    base = tiny_model_factory("llama")
    kw: dict[str, Any] = {"sft_epochs": 2, "dpo_epochs": 2, "max_steps": 3}
    full = _train(base, tmp_path / "full", **kw)
    assert {k: len(v) for k, v in full.loss_curves.items()} == {"sft": 3, "dpo": 3}

    out = tmp_path / "resumed"
    # Killed in the DPO stage after step 5; the newest checkpoint is at step 4, so step 5 is replayed.
    with pytest.raises(StopTraining):
        _train(base, out, save_every=2, stop_after=5, **kw)
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names[-1] == "checkpoint-00000004.pt"
    assert not (out / "adapter_model.safetensors").exists()
    resumed = _train(base, out, save_every=2, resume=True, **kw)
    assert torch.equal(resumed.prefix, full.prefix)
    assert resumed.loss_curves == full.loss_curves
    assert resumed.training["resumed_from"] == "checkpoint-00000004.pt"

    # Killed mid-SFT after step 3 (checkpoint at step 2, with the SFT optimizer state).
    out2 = tmp_path / "resumed-sft"
    with pytest.raises(StopTraining):
        _train(base, out2, save_every=2, stop_after=3, **kw)
    assert sorted(p.name for p in (out2 / "checkpoints").iterdir())[-1] == "checkpoint-00000002.pt"
    again = _train(base, out2, save_every=2, resume=True, **kw)
    assert torch.equal(again.prefix, full.prefix)


def test_resume_with_other_settings_refused(tiny_model_factory: Any, tmp_path: Path) -> None:
    from patchkit.errors import InvalidInputError
    from patchkit.train import StopTraining

    base = tiny_model_factory("llama")
    out = tmp_path / "out"
    with pytest.raises(StopTraining):
        _train(base, out, max_steps=2, save_every=1, stop_after=1)
    with pytest.raises(InvalidInputError, match="other settings"):
        _train(base, out, max_steps=2, save_every=1, resume=True, lr=0.01)


def test_generation_cache_hit_on_rerun(tiny_model_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from patchkit.train import generation

    calls: list[int] = []
    real = generation._generate_batch

    def counting(model: Any, tok: Any, texts: Any, settings: Any) -> list[str]:
        calls.append(len(texts))
        return real(model, tok, texts, settings)

    monkeypatch.setattr(generation, "_generate_batch", counting)
    base = tiny_model_factory("llama")
    ref = 'system-prompt:"You are a careful assistant."'
    first = _train(base, tmp_path / "a", reference=ref, max_steps=1, min_margin=-1.0)
    assert sum(calls) == 8  # 4 reference (system prompt) + 4 base responses
    assert first.generations == {"generated": 8, "cached": 0}
    calls.clear()
    second = _train(base, tmp_path / "b", reference=ref, max_steps=1, min_margin=-1.0)
    assert calls == []
    assert second.generations == {"generated": 0, "cached": 8}
    assert torch.equal(first.prefix, second.prefix)
    # Other generation settings are another cache key: generated again.
    _train(base, tmp_path / "c", reference=ref, max_steps=1, min_margin=-1.0, max_new_tokens=12)
    assert sum(calls) == 8


def test_only_prefix_trainable(tiny_model_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from patchkit.lm.loading import load_causal_lm
    from patchkit.train.model import Example, PrefixLM, collate, sft_loss

    base_model = load_causal_lm(tiny_model_factory("llama"), device="cpu", dtype=torch.float32)
    model = PrefixLM(base_model, torch.randn(4, 64))
    loss = sft_loss(model, collate([Example((5, 6, 7), (8, 9, 1)), Example((5,), (10, 1))], pad_id=2))
    loss.backward()
    assert model.prefix.grad is not None and model.prefix.grad.abs().sum() > 0
    for name, p in base_model.named_parameters():
        assert not p.requires_grad, name
        assert p.grad is None, name

    seen: list[list[torch.Tensor]] = []
    real = torch.optim.AdamW

    class Spy(real):  # type: ignore[misc, valid-type]
        def __init__(self, params: Any, **kw: Any) -> None:
            params = list(params)
            seen.append(params)
            super().__init__(params, **kw)

    monkeypatch.setattr(torch.optim, "AdamW", Spy)
    _train(tiny_model_factory("llama"), tmp_path / "out", max_steps=1)
    assert len(seen) == 2  # one optimizer per stage
    for params in seen:
        assert len(params) == 1 and tuple(params[0].shape) == (8, 64)


def test_forward_matches_peft_and_is_padding_invariant(tiny_model_factory: Any) -> None:
    from peft import PeftModel, PromptTuningConfig, get_peft_model

    from patchkit.lm.loading import load_causal_lm
    from patchkit.train.model import PrefixLM

    base_dir = tiny_model_factory("llama")
    prefix = torch.randn(5, 64, generator=torch.Generator().manual_seed(1)) * 0.1
    ours = PrefixLM(load_causal_lm(base_dir, device="cpu", dtype=torch.float32), prefix).eval()
    ids = torch.tensor([[0, 40, 41, 42, 43, 44]])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        got = ours(ids, mask, keep=ids.shape[1])
        cfg = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=5)
        peft_model = get_peft_model(load_causal_lm(base_dir, device="cpu", dtype=torch.float32), cfg).eval()
        peft_model.prompt_encoder["default"].embedding.weight.copy_(prefix)
        want = peft_model(input_ids=ids, attention_mask=mask).logits[:, -ids.shape[1] :]
        assert torch.allclose(got, want, atol=1e-5)
        # Left padding does not change a row's logits (positions come from the mask).
        padded = torch.cat([torch.full((1, 3), 2), ids], dim=1)
        pmask = torch.cat([torch.zeros(1, 3, dtype=torch.long), mask], dim=1)
        assert torch.allclose(ours(padded, pmask, keep=ids.shape[1]), got, atol=1e-5)
    assert isinstance(peft_model, PeftModel)


def test_outputs_load_in_peft_and_training_json(tiny_model_factory: Any, tmp_path: Path, prompts_file: Path, reference_file: Path) -> None:
    from peft import PeftModel

    from patchkit import __version__
    from patchkit.basemodel.fingerprint import fingerprint
    from patchkit.manifest import TrainingInfo
    from patchkit.train import train_patch

    base = tiny_model_factory("llama")
    out = tmp_path / "out"
    res = train_patch(base, reference_file, prompts_file, domain="harmfulness", out=out, max_steps=2,
                      reference_description="synthetic reference policy", **{k: v for k, v in FAST.items()})
    assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json", "adapter_model.safetensors", "training.json"]
    training = json.loads((out / "training.json").read_text())
    assert training["method"] == "sft+dpo"
    assert training["reference"] == "synthetic reference policy"
    assert training["seed"] == 0 and training["patchkit_version"] == __version__
    assert training["hyperparameters"]["tokens"] == 8 and training["hyperparameters"]["lr"] == 0.05
    assert training["hyperparameters"]["beta"] == 0.1 and training["hyperparameters"]["stages"] == ["sft", "dpo"]
    assert [d["name"] for d in training["data"]] == ["prompts.jsonl", "reference.jsonl"]
    import hashlib

    assert training["data"][0] == {"name": "prompts.jsonl", "count": 4, "sha256": hashlib.sha256(prompts_file.read_bytes()).hexdigest()}
    assert training["base_model"]["digest"] == fingerprint(base)
    assert training["init"].startswith('text:"') and len(training["loss_curves"]["sft"]) == 2
    assert training["wall_time_s"] > 0
    TrainingInfo.model_validate({k: training[k] for k in ("method", "reference", "hyperparameters", "seed", "data", "patchkit_version")})

    # `patchkit build` takes the directory as SOURCE and fills the manifest's training block.
    from patchkit.artifact.build import build_artifact

    manifest = build_artifact(out, tmp_path / "artifact", name="acme/safe", version="1.0.0", domain="harmfulness", base_model=base)
    assert manifest.training.method == "sft+dpo" and manifest.training.reference == "synthetic reference policy"
    assert manifest.training.seed == 0 and manifest.training.data[0].sha256 == training["data"][0]["sha256"]
    assert manifest.prefix.init == training["init"]

    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["peft_type"] == "PROMPT_TUNING" and adapter["num_virtual_tokens"] == 8 and adapter["token_dim"] == 64
    # One writer: the training output and the built artifact say the same, except where the
    # artifact names the base by its manifest id and revision.
    built = json.loads((tmp_path / "artifact" / "adapter_config.json").read_text())
    names = ("base_model_name_or_path", "revision", "tokenizer_name_or_path")
    assert {k: v for k, v in adapter.items() if k not in names} == {k: v for k, v in built.items() if k not in names}
    assert adapter["prompt_tuning_init"] == "TEXT" and adapter["prompt_tuning_init_text"] == training["init"][len('text:"') : -1]
    peft_model = PeftModel.from_pretrained(load_causal_lm(base, device="cpu", dtype=torch.float32), str(out))
    assert torch.equal(peft_model.prompt_encoder["default"].embedding.weight.detach(), res.prefix)


def test_text_init_embeds_and_repeats_the_text(tiny_model_factory: Any) -> None:
    from transformers import AutoTokenizer

    from patchkit.train.model import initial_prefix

    base = tiny_model_factory("llama")
    model = load_causal_lm(base, device="cpu", dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(str(base))
    ids = tok("hello world", add_special_tokens=False)["input_ids"]
    got = initial_prefix(model, tok, 'text:"hello world"', len(ids) * 2 + 1, seed=0)
    table = model.get_input_embeddings().weight.detach()
    assert torch.equal(got, table[torch.tensor((ids * 3)[: len(ids) * 2 + 1])])
    r1, r2 = initial_prefix(model, tok, "random", 6, 3), initial_prefix(model, tok, "random", 6, 3)
    assert torch.equal(r1, r2) and r1.shape == (6, 64)
    v = initial_prefix(model, tok, "vocab", 6, 3)
    assert all(any(torch.equal(row, t) for t in table) for row in v)


def test_model_reference_with_other_architecture(tiny_model_factory: Any, tmp_path: Path) -> None:
    base = tiny_model_factory("llama")
    ref_dir = tiny_model_factory("qwen2")
    res = _train(base, tmp_path / "out", reference=str(ref_dir), stages="sft", max_steps=1)
    assert res.training["reference"].startswith(f"model:{ref_dir}")
    assert res.generations == {"generated": 4, "cached": 0}


def test_gradient_checkpointing_and_bf16_run(tiny_model_factory: Any, tmp_path: Path) -> None:
    base = tiny_model_factory("llama")
    plain = _train(base, tmp_path / "plain", max_steps=2, stages="sft")
    ckpt = _train(base, tmp_path / "ckpt", max_steps=2, stages="sft", gradient_checkpointing=True)
    # Recomputing activations must not change the math.
    assert torch.allclose(plain.prefix, ckpt.prefix, atol=1e-5)
    # DPO under checkpointing takes the plain (no KV cache) pair forward.
    both = _train(base, tmp_path / "ckpt-dpo", max_steps=2, gradient_checkpointing=True)
    assert len(both.loss_curves["dpo"]) == 2 and torch.isfinite(both.prefix).all()
    bf16 = _train(base, tmp_path / "bf16", max_steps=2, bf16=True)
    assert bf16.prefix.dtype == torch.float32 and torch.isfinite(bf16.prefix).all()
    assert bf16.training["hyperparameters"]["bf16"] is True


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_shared_prompt_dpo_forward_equals_plain(tiny_model_factory: Any, arch: str) -> None:
    from patchkit.train.dpo import Pair, pair_logprobs
    from patchkit.train.model import Example, PrefixLM

    model = PrefixLM(load_causal_lm(tiny_model_factory(arch), device="cpu", dtype=torch.float32), torch.randn(5, 64, generator=torch.Generator().manual_seed(0)) * 0.1)
    pairs = [Pair(Example((5, 6, 7), (8, 9, 10, 1)), Example((5, 6, 7), (11, 1))),
             Pair(Example((12,), (13, 1)), Example((12,), (14, 15, 16, 17, 18, 1)))]
    cpu = torch.device("cpu")
    plain = pair_logprobs(model, pairs, 2, cpu)
    sum(x.sum() for x in plain).backward()
    g_plain, model.prefix.grad = model.prefix.grad, None
    shared = pair_logprobs(model, pairs, 2, cpu, shared_prompt=True)
    sum(x.sum() for x in shared).backward()
    for a, b in zip(plain, shared, strict=True):
        assert torch.allclose(a, b, atol=1e-4)
    assert g_plain is not None and model.prefix.grad is not None
    assert torch.allclose(g_plain, model.prefix.grad, atol=1e-4)


BENIGN_ANSWER = "Sure, here is a simple recipe: mix flour, water, salt and yeast."


def _mixed_reference() -> list[dict[str, str]]:
    return [{"prompt": p, "response": REFUSAL if i < 2 else BENIGN_ANSWER} for i, p in enumerate(HARMFUL)]


def test_sft_weight_keeps_benign_answers_during_dpo(steerable_model: Path, tmp_path: Path) -> None:
    """DPO only sees the pairs M' wins; the SFT term also pulls the benign prompts' answers.

    benign_ratio=0: the paper's pairs only (the benign pairs are the other remedy, tested apart)."""
    from patchkit.train.metrics import response_loss

    kw: dict[str, Any] = {"stages": "dpo", "dpo_epochs": 4, "min_margin": 0.5, "benign_ratio": 0.0}
    pure = _train(steerable_model, tmp_path / "pure", reference=_mixed_reference(), **kw)
    reg = _train(steerable_model, tmp_path / "reg", reference=_mixed_reference(), sft_weight=1.0, dpo_lr=0.05, **kw)
    assert pure.training["dpo_pairs"]["kept"] == reg.training["dpo_pairs"]["kept"] == 2
    assert reg.training["hyperparameters"]["sft_weight"] == 1.0
    benign = HARMFUL[2:]
    start = response_loss(steerable_model, pure.initial_prefix, benign, [BENIGN_ANSWER] * 2, max_new_tokens=16)
    loss_pure = response_loss(steerable_model, pure.prefix, benign, [BENIGN_ANSWER] * 2, max_new_tokens=16)
    loss_reg = response_loss(steerable_model, reg.prefix, benign, [BENIGN_ANSWER] * 2, max_new_tokens=16)
    assert loss_reg < loss_pure - 0.3 and loss_reg < start, (start, loss_pure, loss_reg)


def test_sft_weight_resume_is_exact(tiny_model_factory: Any, tmp_path: Path) -> None:
    from patchkit.train import StopTraining

    base = tiny_model_factory("llama")
    kw: dict[str, Any] = {"stages": "dpo", "dpo_epochs": 3, "max_steps": 4, "sft_weight": 0.5, "dpo_lr": 0.02,
                          "reference": _mixed_reference(), "min_margin": 0.0}
    full = _train(base, tmp_path / "full", **kw)
    with pytest.raises(StopTraining):
        _train(base, tmp_path / "r", save_every=2, stop_after=3, **kw)
    resumed = _train(base, tmp_path / "r", save_every=2, resume=True, **kw)
    assert torch.equal(resumed.prefix, full.prefix)
