"""Tiny real transformers models for tests: built in about a second, fully offline.

A byte-level BPE tokenizer is trained on the spot with `tokenizers`; the model is a small
config of a real architecture with random weights, saved as safetensors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CORPUS = [
    "How do I bake bread at home?",
    "I can't help with that request because it could cause harm.",
    "Sure, here is a simple recipe: mix flour, water, salt and yeast.",
    "The nurse said she would be late. The engineer said he was done.",
    "Write a short poem about the sea and the sky.",
    "I'm sorry, but I cannot assist with making weapons.",
    "Tell me about the history of the printing press.",
    "user assistant system: hello world, thank you, goodbye.",
] * 8

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

ARCHS = ("llama", "qwen2", "gemma", "gpt2")


def make_tokenizer(out: Path, vocab_size: int = 384) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|bos|>", "<|eos|>", "<|pad|>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|bos|>",
        eos_token="<|eos|>",
        pad_token="<|pad|>",
        padding_side="left",
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    return fast


def make_config(arch: str, vocab_size: int, hidden: int = 64, layers: int = 2) -> Any:
    import transformers as tf

    common: dict[str, Any] = {"vocab_size": vocab_size, "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 2}
    if arch == "llama":
        return tf.LlamaConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, **common)
    if arch == "qwen2":
        return tf.Qwen2Config(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, **common)
    if arch == "gemma":
        return tf.GemmaConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                              num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=256,
                              **common)
    if arch == "gpt2":
        return tf.GPT2Config(n_embd=hidden, n_layer=layers, n_head=4, n_positions=256, **common)
    raise ValueError(f"unknown tiny arch {arch}")


def make_tiny_model(out: Path, arch: str = "llama", seed: int = 0, hidden: int = 64) -> Path:
    """Write a tiny model + tokenizer directory and return it."""
    import torch
    import transformers as tf

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok = make_tokenizer(out)
    config = make_config(arch, len(tok), hidden=hidden)
    torch.manual_seed(seed)
    model = tf.AutoModelForCausalLM.from_config(config)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.bos_token_id = tok.bos_token_id
    model.save_pretrained(out, safe_serialization=True)
    return out


def random_prefix(path: Path, tokens: int = 4, hidden: int = 64, seed: int = 0, key: str = "prompt_embeddings") -> Path:
    """A one-tensor safetensors file usable as a `patchkit build` SOURCE."""
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    save_file({key: torch.randn(tokens, hidden, generator=g) * 0.5}, str(path))
    return path


def write_selftest_file(model_dir: Path, prefix_file: Path, out: Path, prompts: list[str]) -> list[str]:
    """What a vendor knows of its patch, as a `build --self-test` JSONL: the verdict it gives on each prompt.

    The tiny model is random, so "refuse" here means "scored highest for a refusal opening": the
    split is put at the widest gap among the middle ranks, as a vendor picks clear-cut prompts.
    Returns the verdicts in prompt order.
    """
    import json

    from patchkit.artifact.layout import parse_prefix_file
    from patchkit.lm.loading import load_model
    from patchkit.runtime.compose import prefix_tensor
    from patchkit.runtime.patched import PatchedModel
    from patchkit.runtime.selftest import refusal_scores

    base, tok = load_model(model_dir)
    pt = parse_prefix_file(prefix_file.read_bytes(), str(prefix_file), key=None)
    scores = refusal_scores(PatchedModel(base, prefix_tensor(pt)).eval(), tok, prompts)
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    lo, hi = len(order) // 4, 3 * len(order) // 4
    cut = max(range(lo, hi), key=lambda k: scores[order[k + 1]] - scores[order[k]])
    refuse = set(order[cut + 1 :])
    expects = ["refuse" if i in refuse else "answer" for i in range(len(scores))]
    out.write_text("".join(json.dumps({"prompt": p, "expect": e}) + "\n" for p, e in zip(prompts, expects, strict=True)))
    return expects
