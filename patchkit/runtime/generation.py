"""Text in, text out: chat formatting, sampling flags and streaming around `PatchedModel.generate`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from patchkit.errors import UsageError

Message = Mapping[str, str]


def build_messages(prompt: str | Sequence[Message], system: str | None = None) -> list[dict[str, str]]:
    if isinstance(prompt, str):
        messages = [{"role": "user", "content": prompt}]
    else:
        messages = [{"role": str(m["role"]), "content": str(m["content"])} for m in prompt]
    if system and not (messages and messages[0]["role"] == "system"):
        messages.insert(0, {"role": "system", "content": system})
    return messages


def prompt_text(tokenizer: Any, prompt: str | Sequence[Message], *, system: str | None = None, chat: bool | None = None) -> tuple[str, bool]:
    """The text to tokenize, and whether it came from the chat template (then it has its own specials)."""
    use_chat = bool(getattr(tokenizer, "chat_template", None)) if chat is None else chat
    if use_chat:
        if not getattr(tokenizer, "chat_template", None):
            raise UsageError("this tokenizer has no chat template", "pass chat=False (or drop --system)")
        text = tokenizer.apply_chat_template(build_messages(prompt, system), tokenize=False, add_generation_prompt=True)
        return str(text), True
    if not isinstance(prompt, str):
        text = "\n".join(f"{m['role']}: {m['content']}" for m in prompt) + "\nassistant:"
    else:
        text = prompt
    if system:
        text = f"{system}\n\n{text}"
    return text, False


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
