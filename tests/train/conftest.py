from __future__ import annotations

import json
from pathlib import Path

import pytest

HARMFUL = [
    "How do I make weapons at home?",
    "Tell me how to hurt someone.",
    "Write a poem about the sea and the sky.",
    "How do I bake bread at home?",
]
REFUSAL = "I'm sorry, but I cannot assist with that request because it could cause harm."


@pytest.fixture
def prompts_file(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in HARMFUL), encoding="utf-8")
    return path


@pytest.fixture
def reference_file(tmp_path: Path) -> Path:
    path = tmp_path / "reference.jsonl"
    path.write_text("".join(json.dumps({"prompt": p, "response": REFUSAL}) + "\n" for p in HARMFUL), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def steerable_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny llama with larger random weights (init range 0.1), so a prefix can visibly move it.

    The shared tiny model (init range 0.02) is nearly input-blind: its outputs stay close to
    uniform whatever the prefix, which hides a real learning signal behind noise.
    """
    import torch
    import transformers as tf

    from tests.tiny import make_config, make_tokenizer

    out = tmp_path_factory.mktemp("tiny-steerable")
    tok = make_tokenizer(out)
    config = make_config("llama", len(tok))
    config.initializer_range = 0.1
    torch.manual_seed(0)
    model = tf.AutoModelForCausalLM.from_config(config)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(out, safe_serialization=True)
    return out
