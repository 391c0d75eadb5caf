"""The patched model equals PEFT (use_cache=False) and a no-cache naive concatenation, per
architecture, with KV reuse on and off, at batch 1 and at batch 4 with left padding."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.runtime._support import PROMPTS, Kit, cut_at_eos, naive_greedy
from tests.tiny import ARCHS

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

NEW = 12
ATOL = 1e-4


def _peft(model_dir: Path, peft_dir: Path) -> Any:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    return PeftModel.from_pretrained(base, str(peft_dir)).eval()


@pytest.fixture(scope="module")
def setups(kit: Kit, arch_patch: Callable[[str], tuple[Path, Path, Path]], tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Per architecture, loaded once for this module: (patched model, tokenizer, PEFT model)."""
    import patchkit
    from tests.runtime._support import home

    cache: dict[str, tuple[Any, Any, Any]] = {}

    def get(arch: str) -> tuple[Any, Any, Any]:
        if arch not in cache:
            model_dir, art, peft_dir = arch_patch(arch)
            with home(tmp_path_factory.mktemp(f"eq-home-{arch}")):
                model, tok = patchkit.load(model_dir, [art], trust=kit.trust, device="cpu")
            cache[arch] = (model, tok, _peft(model_dir, peft_dir))
        return cache[arch]

    return get


def _with_positions(model: Any, positions: str) -> Any:
    from patchkit.runtime.patched import PatchedModel

    return PatchedModel(model.base, model.prefix, model.patches, positions=positions)  # type: ignore[arg-type]


def _rows(seqs: Any, start: int, eos: int | None) -> list[list[int]]:
    return [cut_at_eos(r, start, eos) for r in seqs.tolist()]


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("batch", [1, 4])
def test_peft_positions_three_routes(arch: str, batch: int, setups: Any) -> None:
    """positions="peft": pads take positions, exactly as PeftModel does; all routes agree."""
    loaded, tok, peft = setups(arch)
    model = _with_positions(loaded, "peft")
    enc = tok(PROMPTS[:batch], return_tensors="pt", padding=True)
    if batch > 1:
        assert (enc.attention_mask == 0).any(), "the batch must really be left padded"
        assert (enc.attention_mask[:, -1] == 1).all()
    eos, start = tok.eos_token_id, enc.input_ids.shape[1]
    kv = model.generate(**enc, max_new_tokens=NEW, do_sample=False, use_prefix_cache=True)
    no_kv = model.generate(**enc, max_new_tokens=NEW, do_sample=False, use_prefix_cache=False)
    naive, naive_logits = naive_greedy(model.base, model.prefix, enc.input_ids, enc.attention_mask, NEW, positions="peft")
    # PeftModel.generate drops position ids for prompt learning (peft < 0.22 warned, 0.22 is silent);
    # the assertions below are what holds whatever it says.
    ref = peft.generate(**enc, max_new_tokens=NEW, do_sample=False, use_cache=False)
    want = _rows(ref, start, eos)
    assert len(want[0]) > 1
    assert _rows(kv, start, eos) == want
    assert _rows(no_kv, start, eos) == want
    assert _rows(naive, start, eos) == want
    with torch.no_grad():
        peft_logits = peft(**enc).logits[:, -1]
        for use in (True, False):
            ours = model(**enc, use_prefix_cache=use).logits[:, -1]
            torch.testing.assert_close(ours, peft_logits, atol=ATOL, rtol=0)
            torch.testing.assert_close(ours, naive_logits, atol=ATOL, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_default_positions_three_routes_and_batch_invariance(arch: str, setups: Any) -> None:
    """Default positions="mask": KV on/off and naive agree at batch 4; each padded row equals the
    prompt alone, which equals PEFT for that prompt."""
    model, tok, peft = setups(arch)
    assert model.positions == "mask"
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    eos, start = tok.eos_token_id, enc.input_ids.shape[1]
    kv = model.generate(**enc, max_new_tokens=NEW, do_sample=False)
    no_kv = model.generate(**enc, max_new_tokens=NEW, do_sample=False, use_prefix_cache=False)
    naive, naive_logits = naive_greedy(model.base, model.prefix, enc.input_ids, enc.attention_mask, NEW, positions="mask")
    assert _rows(kv, start, eos) == _rows(naive, start, eos) == _rows(no_kv, start, eos)
    with torch.no_grad():
        batch_logits = model(**enc).logits[:, -1]
        torch.testing.assert_close(batch_logits, naive_logits, atol=ATOL, rtol=0)
        torch.testing.assert_close(model(**enc, use_prefix_cache=False).logits[:, -1], naive_logits, atol=ATOL, rtol=0)
    for i, prompt in enumerate(PROMPTS):
        one = tok([prompt], return_tensors="pt", padding=True)
        alone = model.generate(**one, max_new_tokens=NEW, do_sample=False)
        ref = peft.generate(**one, max_new_tokens=NEW, do_sample=False, use_cache=False)
        s1 = one.input_ids.shape[1]
        assert _rows(alone, s1, eos) == _rows(ref, s1, eos)
        assert _rows(kv, start, eos)[i] == _rows(alone, s1, eos)[0], f"row {i} changed with padding"
        with torch.no_grad():
            torch.testing.assert_close(model(**one).logits[:, -1], batch_logits[i : i + 1], atol=ATOL, rtol=0)
