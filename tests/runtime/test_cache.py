"""The prefix KV cache: computed once, copied per call, never mutated; and the PEFT cached
prompt-tuning bug (transformers 5.24 + peft 0.21.2) is not inherited."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.runtime._support import PROMPTS, Kit, cut_at_eos

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch


@pytest.fixture
def llama(kit: Kit, arch_patch: Callable[[str], tuple[Path, Path, Path]]) -> tuple[Any, Any, Path, Path]:
    import patchkit

    model_dir, art, peft_dir = arch_patch("llama")
    model, tok = patchkit.load(model_dir, [art], trust=kit.trust, device="cpu")
    return model, tok, model_dir, peft_dir


def test_prefix_cache_computed_once_and_never_mutated(llama: tuple[Any, Any, Path, Path]) -> None:
    model, tok, _, _ = llama
    stored = model.prefix_kv()
    snapshot = [(k.clone(), v.clone()) for k, v in stored]
    assert stored[0][0].shape[0] == 1 and stored[0][0].shape[-2] == model.num_virtual_tokens
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    out1 = model.generate(**enc, max_new_tokens=10, do_sample=False)
    logits1 = model(**enc).logits
    out2 = model.generate(**enc, max_new_tokens=10, do_sample=False)
    logits2 = model(**enc).logits
    assert torch.equal(out1, out2)
    assert torch.equal(logits1, logits2)
    assert model.prefix_kv() is stored, "the prefix cache must be computed once per patch set"
    for (k, v), (k0, v0) in zip(stored, snapshot, strict=True):
        assert torch.equal(k, k0) and torch.equal(v, v0)
    # A call's cache is a copy: scribbling on it leaves the stored one intact.
    fresh = model.fresh_cache(3)
    assert fresh.get_seq_length() == model.num_virtual_tokens
    layer = fresh.layers[0]
    assert layer.keys.shape[0] == 3
    assert layer.keys.data_ptr() != stored[0][0].data_ptr()
    layer.keys.add_(1.0)
    layer.values.mul_(0.0)
    assert torch.equal(stored[0][0], snapshot[0][0]) and torch.equal(stored[0][1], snapshot[0][1])
    assert torch.equal(model.generate(**enc, max_new_tokens=10, do_sample=False), out1)


def test_prefix_cache_follows_a_new_prefix(llama: tuple[Any, Any, Path, Path]) -> None:
    """Changing the prefix in place invalidates the stored cache (no stale keys/values)."""
    model, tok, _, _ = llama
    enc = tok(PROMPTS[:1], return_tensors="pt")
    before = model(**enc).logits
    with torch.no_grad():
        model.prefix.mul_(2.0)
    after_kv = model(**enc).logits
    after_naive = model(**enc, use_prefix_cache=False).logits
    assert not torch.allclose(before, after_kv)
    torch.testing.assert_close(after_kv, after_naive, atol=1e-4, rtol=0)


def test_forward_continues_from_its_own_cache(llama: tuple[Any, Any, Path, Path]) -> None:
    """Manual decoding with the returned cache gives the logits of a full recompute."""
    model, tok, _, _ = llama
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    out = model(**enc, use_cache=True)
    nxt = out.logits[:, -1].argmax(-1, keepdim=True)
    mask = torch.cat([enc.attention_mask, torch.ones_like(nxt)], dim=1)
    step = model(nxt, attention_mask=mask, cache=out.cache)
    full = model(torch.cat([enc.input_ids, nxt], dim=1), attention_mask=mask)
    torch.testing.assert_close(step.logits[:, -1], full.logits[:, -1], atol=1e-4, rtol=0)


def test_no_peft_cached_generate_bug(llama: tuple[Any, Any, Path, Path]) -> None:
    """PEFT's cached prompt-tuning generate re-prepends the virtual tokens each step on
    transformers 5.24 + peft 0.21.2. patchkit (KV reuse on) must equal PEFT's correct
    use_cache=False route; PEFT's cached route is only reported, so a PEFT fix cannot fail this."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model, tok, model_dir, peft_dir = llama
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(model_dir)), str(peft_dir)).eval()
    enc = tok(PROMPTS[:1], return_tensors="pt")
    start, eos = enc.input_ids.shape[1], tok.eos_token_id
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        correct = peft.generate(**enc, max_new_tokens=16, do_sample=False, use_cache=False)
        cached = peft.generate(**enc, max_new_tokens=16, do_sample=False, use_cache=True)
    ours = model.generate(**enc, max_new_tokens=16, do_sample=False)
    assert cut_at_eos(ours[0].tolist(), start, eos) == cut_at_eos(correct[0].tolist(), start, eos)
    if not torch.equal(cached, correct):
        print("PEFT cached prompt-tuning generate still differs from use_cache=False; patchkit is not affected")


def test_generate_helper_uses_chat_template_and_system(llama: tuple[Any, Any, Path, Path]) -> None:
    import patchkit

    model, tok, _, _ = llama
    text = patchkit.generate(model, tok, "hello", max_new_tokens=8, system="be kind")
    msgs = [{"role": "system", "content": "be kind"}, {"role": "user", "content": "hello"}]
    rendered = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert "<|system|>be kind" in rendered
    enc = tok([rendered], return_tensors="pt", add_special_tokens=False)
    out = model.generate(**enc, max_new_tokens=8, do_sample=False)
    assert text == tok.decode(out[0, enc.input_ids.shape[1]:], skip_special_tokens=True)
    # Sampling with a seed is repeatable.
    a = patchkit.generate(model, tok, "hello", max_new_tokens=8, temperature=0.9, seed=3)
    b = patchkit.generate(model, tok, "hello", max_new_tokens=8, temperature=0.9, seed=3)
    assert a == b


def test_no_patches_is_the_plain_model(kit: Kit, tiny_model_factory: Callable[[str], Path]) -> None:
    from transformers import AutoModelForCausalLM

    import patchkit

    model_dir = tiny_model_factory("llama")
    model, tok = patchkit.load(model_dir, [], trust=kit.trust, device="cpu")
    assert model.patch_ids == [] and model.num_virtual_tokens == 0
    plain = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    assert torch.equal(model.generate(**enc, max_new_tokens=8, do_sample=False),
                       plain.generate(**enc, max_new_tokens=8, do_sample=False))
