"""Training's PrefixLM and the runtime's PatchedModel lay a prefix out the same way: equal logits."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.torch

PROMPTS = ["Hi", "Tell me about the sea, please", "How do I bake bread at home?", "A"]


@pytest.fixture(scope="module")
def loaded(tiny_model_factory: Any) -> tuple[Any, Any]:
    import torch

    from patchkit.lm.loading import load_model

    model, tok = load_model(tiny_model_factory("llama"), device="cpu", dtype=torch.float32)
    return model, tok


@pytest.mark.parametrize("kv_reuse", [False, True])
def test_train_and_runtime_give_equal_logits_on_a_left_padded_batch(loaded: tuple[Any, Any], kv_reuse: bool) -> None:
    import torch

    from patchkit.runtime.patched import PatchedModel
    from patchkit.train.model import PrefixLM

    base, tok = loaded
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    assert ids.shape[0] == 4 and tok.padding_side == "left"
    assert (mask == 0).any(dim=1).sum() >= 3  # the batch really is left padded
    prefix = torch.randn(5, base.config.hidden_size, generator=torch.Generator().manual_seed(0)) * 0.05
    with torch.no_grad():
        trained = PrefixLM(base, prefix)(ids, mask, ids.shape[1])
        served = PatchedModel(base, prefix, kv_reuse=kv_reuse)(input_ids=ids, attention_mask=mask).logits
    assert trained.shape == served.shape == (4, ids.shape[1], base.config.vocab_size)
    real = mask.bool()
    torch.testing.assert_close(trained[real], served[real], atol=1e-4, rtol=1e-4)
    # And each row equals the same prompt run alone: padding does not shift anything.
    with torch.no_grad():
        for row, prompt in enumerate(PROMPTS):
            one = tok([prompt], return_tensors="pt")
            alone = PatchedModel(base, prefix, kv_reuse=kv_reuse)(**one).logits[0]
            torch.testing.assert_close(served[row][real[row]], alone, atol=1e-4, rtol=1e-4)


def test_positions_count_attended_tokens_only() -> None:
    import torch

    from patchkit.lm.prefix import positions_from_mask, prefix_mask

    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    full = prefix_mask(mask, 2)
    assert full.tolist() == [[1, 1, 0, 0, 1, 1], [1, 1, 1, 1, 1, 1]]
    assert positions_from_mask(full).tolist() == [[0, 1, 0, 0, 2, 3], [0, 1, 2, 3, 4, 5]]
