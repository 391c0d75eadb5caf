"""Text in, text out: chat formatting, sampling flags and streaming around `PatchedModel.generate`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from patchkit.errors import UsageError
from patchkit.lm.chat import Message, format_chat


def prompt_text(tokenizer: Any, prompt: str | Sequence[Message], *, system: str | None = None, chat: bool | None = None) -> tuple[str, bool]:
    """The text to tokenize, and whether it came from the chat template (then it has its own specials)."""
    f = format_chat(tokenizer, prompt, system=system, chat=chat)
    return f.text, f.templated


def encode(tokenizer: Any, prompts: Sequence[str | Sequence[Message]], *, system: str | None = None, chat: bool | None = None,
           device: Any = None) -> Any:
    """Left-padded batch encoding of one or more prompts."""
    texts: list[str] = []
    templated = False
    for p in prompts:
        t, templated = prompt_text(tokenizer, p, system=system, chat=chat)
        texts.append(t)
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=not templated)
    return enc.to(device) if device is not None else enc


def sampling_kwargs(temperature: float | None = None, seed: int | None = None) -> dict[str, Any]:
    """Greedy unless temperature > 0; a seed makes sampling repeatable."""
    if seed is not None:
        import torch

        torch.manual_seed(seed)
    if temperature is None or temperature <= 0:
        return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    return {"do_sample": True, "temperature": float(temperature)}


def make_streamer(tokenizer: Any) -> Any:
    from transformers import TextStreamer

    return TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)


def generate(
    model: Any,
    tokenizer: Any,
    prompt: str | Sequence[Message],
    max_new_tokens: int = 64,
    *,
    temperature: float | None = None,
    seed: int | None = None,
    system: str | None = None,
    chat: bool | None = None,
    streamer: Any = None,
    stream: bool = False,
    **kwargs: Any,
) -> str:
    """Generate a reply to `prompt` (text, or a list of chat messages); returns only the new text.

    The chat template is used when the tokenizer has one (chat=None); `stream=True` prints the
    tokens to stdout as they come.
    """
    if max_new_tokens < 1:
        raise UsageError(f"max_new_tokens must be at least 1, got {max_new_tokens}", "pass a positive number")
    device = getattr(model, "device", None)
    enc = encode(tokenizer, [prompt], system=system, chat=chat, device=device)
    if streamer is None and stream:
        streamer = make_streamer(tokenizer)
    gen_kwargs = {**sampling_kwargs(temperature, seed), **kwargs}
    if tokenizer.pad_token_id is not None:
        gen_kwargs.setdefault("pad_token_id", tokenizer.pad_token_id)
    out = model.generate(**enc, max_new_tokens=max_new_tokens, streamer=streamer, **gen_kwargs)
    seq = out if not hasattr(out, "sequences") else out.sequences
    new = seq[0, enc["input_ids"].shape[1]:]
    return str(tokenizer.decode(new, skip_special_tokens=True))
