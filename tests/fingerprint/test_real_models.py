"""Real transformers checkpoints: re-sharding with save_pretrained keeps the fingerprint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from patchkit.basemodel.fingerprint import fingerprint_details


@pytest.mark.torch
def test_save_pretrained_sharded_equals_single_file(tiny_model_factory: Any, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    src = tiny_model_factory("llama")
    single = fingerprint_details(src, use_cache=False)
    assert single.tensors > 5

    model = AutoModelForCausalLM.from_pretrained(src, torch_dtype=torch.float32)
    sharded = tmp_path / "sharded"
    model.save_pretrained(sharded, safe_serialization=True, max_shard_size="100KB")
    assert (sharded / "model.safetensors.index.json").exists()
    assert len(list(sharded.glob("*.safetensors"))) >= 3
    res = fingerprint_details(sharded, use_cache=False)
    assert res.digest == single.digest
    assert res.tensors == single.tensors and res.bytes == single.bytes

    with torch.no_grad():
        next(iter(model.parameters())).view(-1)[0] += 1.0
    changed = tmp_path / "changed"
    model.save_pretrained(changed, safe_serialization=True)
    assert fingerprint_details(changed, use_cache=False).digest != single.digest
