"""Helpers for the serve tests: a tiny model with a long context, and a server run as a real process."""

from __future__ import annotations

from pathlib import Path

SERVE_POSITIONS = 2048


def make_serve_model(out: Path, *, positions: int = SERVE_POSITIONS, seed: int = 0) -> Path:
    """tests.tiny's Llama (hidden 64, 2 layers, byte-level BPE), with `positions` positions."""
    import torch
    import transformers as tf

    from tests.tiny import make_config, make_tokenizer

    out.mkdir(parents=True, exist_ok=True)
    tok = make_tokenizer(out)
    config = make_config("llama", len(tok))
    config.max_position_embeddings = positions
    torch.manual_seed(seed)
    model = tf.AutoModelForCausalLM.from_config(config)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.bos_token_id = tok.bos_token_id
    model.save_pretrained(out, safe_serialization=True)
    return out
