"""One chat formatter: training, evaluation and the runtime see the same token ids for a prompt."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.torch

GEMMA_LIKE = (
    "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.fixture
def tokenizer(tiny_model_factory: Any) -> Any:
    from patchkit.lm.loading import load_tokenizer

    return load_tokenizer(tiny_model_factory("llama"))


def _train_ids(tok: Any, prompt: str, system: str | None) -> list[int]:
    from patchkit.train.generation import encode_prompt, format_prompt

    return encode_prompt(tok, format_prompt(tok, prompt, system=system))


def _eval_ids(tok: Any, prompt: str, system: str | None) -> list[int]:
    from patchkit.eval.backend import Backend

    backend = Backend(object(), tok)
    enc = backend.tokenizer([backend.format(prompt, system)], add_special_tokens=not backend.chat)
    return [int(i) for i in enc["input_ids"][0]]


def _runtime_ids(tok: Any, prompt: str, system: str | None) -> list[int]:
    from patchkit.runtime.generation import encode

    enc = encode(tok, [prompt], system=system)
    return [int(i) for i in enc["input_ids"][0]]


@pytest.mark.parametrize("system", [None, "You are a careful assistant."])
def test_train_eval_and_runtime_tokenize_a_prompt_identically(tokenizer: Any, system: str | None) -> None:
    prompt = "How do I bake bread at home?"
    ids = _train_ids(tokenizer, prompt, system)
    assert ids == _eval_ids(tokenizer, prompt, system) == _runtime_ids(tokenizer, prompt, system)
    if system:
        assert ids != _train_ids(tokenizer, prompt, None)  # the system message is really there


def test_a_template_that_refuses_a_system_role_is_folded_and_said(tokenizer: Any) -> None:
    from patchkit.eval.backend import Backend
    from patchkit.lm.chat import FOLD_NOTE, format_chat

    tokenizer.chat_template = GEMMA_LIKE
    f = format_chat(tokenizer, "hi", system="be brief")
    assert f.system_folded and "be brief\n\nhi" in f.text and "<|system|>" not in f.text
    assert not format_chat(tokenizer, "hi").system_folded
    backend = Backend(object(), tokenizer)
    backend.format("hi", "be brief")
    assert backend.notes == {FOLD_NOTE}  # named in the metrics' settings, not silent


def test_other_template_errors_are_not_swallowed(tokenizer: Any) -> None:
    from jinja2.exceptions import TemplateError

    from patchkit.lm.chat import format_chat

    tokenizer.chat_template = "{{ raise_exception('broken template') }}"
    with pytest.raises(TemplateError):
        format_chat(tokenizer, "hi")  # no system message to fold: the error is the template's
