"""The text a model sees for a prompt: its chat template when it has one, else plain text.

A template that refuses a system role (Gemma's raises a template error) gets the system text
folded into the first user turn; the result says so (`system_folded`), so an evaluation can
name the fallback in its settings instead of changing what was evaluated without a word.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from patchkit.errors import UsageError

Message = Mapping[str, str]
FOLD_NOTE = "the chat template refuses a system role: the system text is folded into the first user turn"


@dataclass(frozen=True)
class Formatted:
    text: str
    templated: bool  # the chat template wrote its own special tokens
    system_folded: bool = False


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def build_messages(prompt: str | Sequence[Message], system: str | None = None) -> list[dict[str, str]]:
    if isinstance(prompt, str):
        messages = [{"role": "user", "content": prompt}]
    else:
        messages = [{"role": str(m["role"]), "content": str(m["content"])} for m in prompt]
    if system and not (messages and messages[0]["role"] == "system"):
        messages.insert(0, {"role": "system", "content": system})
    return messages


def _fold(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    rest = [dict(m) for m in messages if m["role"] != "system"]
    for m in rest:
        if m["role"] == "user":
            m["content"] = f"{system}\n\n{m['content']}"
            break
    return rest


def format_chat(tokenizer: Any, prompt: str | Sequence[Message], *, system: str | None = None,
                chat: bool | None = None) -> Formatted:
    """Format one prompt (a string or a conversation) for `tokenizer`'s model.

    `chat=None` uses the chat template when the tokenizer has one; `True` requires it; `False`
    gives plain text (`system`, a blank line, then the prompt).
    """
    use_chat = has_chat_template(tokenizer) if chat is None else chat
    if use_chat:
        if not has_chat_template(tokenizer):
            raise UsageError("this tokenizer has no chat template", "use plain text (chat=False), or drop the system prompt")
        from jinja2.exceptions import TemplateError

        messages = build_messages(prompt, system)
        try:
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            return Formatted(str(text), True)
        except TemplateError:  # raised by the template itself (`raise_exception`), e.g. "System role not supported"
            if not any(m["role"] == "system" for m in messages):
                raise
        text = tokenizer.apply_chat_template(_fold(messages), tokenize=False, add_generation_prompt=True)
        return Formatted(str(text), True, system_folded=True)
    if isinstance(prompt, str):
        text = prompt
    else:
        text = "\n".join(f"{m['role']}: {m['content']}" for m in prompt) + "\nassistant:"
    return Formatted(f"{system}\n\n{text}" if system else text, False)


def token_ids(tokenizer: Any, formatted: Formatted) -> list[int]:
    """Token ids of a formatted prompt: a chat template already holds its special tokens."""
    ids = tokenizer(formatted.text, add_special_tokens=not formatted.templated)["input_ids"]
    return [int(i) for i in ids]


__all__ = ["FOLD_NOTE", "Formatted", "Message", "build_messages", "format_chat", "has_chat_template", "token_ids"]
