"""What an OpenAI client parses: the two completion routes' choices, chunks, envelopes and usage.

Kept apart from the completion service (`completion`) so the wire format can be read, and
compared with OpenAI's, in one place. The patch set a request ran with is part of every shape:
its digests in `usage.patches` and in `system_fingerprint`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from patchkit.serve.jobs import Job, Piece
from patchkit.serve.patches import PatchSet
from patchkit.serve.protocol import ChatRequest, CompletionRequest

CHAT_PATH = "/v1/chat/completions"


@dataclass
class Call:
    """One validated request on its way to the engine."""

    endpoint: str
    model: str
    patch_set: PatchSet
    jobs: list[Job]
    stream: bool
    include_usage: bool
    started: float
    id: str
    created: int


def usage(prompt: int, completion: int, ps: PatchSet) -> dict[str, Any]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prefix_tokens": ps.num_virtual_tokens, "patches": ps.usage()}


def sse(payload: dict[str, Any] | str) -> dict[str, str]:
    return {"data": payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))}


def envelope(call: Call, kind: str) -> dict[str, Any]:
    """The fields around the choices; `kind` is "chunk" (streamed) or "whole"."""
    if call.endpoint == CHAT_PATH:
        obj = "chat.completion.chunk" if kind == "chunk" else "chat.completion"
    else:
        obj = "text_completion"
    env: dict[str, Any] = {"id": call.id, "object": obj, "created": call.created, "model": call.model,
                           "system_fingerprint": call.patch_set.fingerprint()}
    if call.include_usage and kind == "chunk":
        env["usage"] = None
    return env


def chunk(call: Call, choice: dict[str, Any]) -> dict[str, Any]:
    """One streamed event holding one choice's part."""
    return {**envelope(call, "chunk"), "choices": [choice]}


def _chat_opening(i: int) -> dict[str, Any]:
    return {"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None, "logprobs": None}


def _chat_delta(i: int, piece: Piece) -> dict[str, Any]:
    return {"index": i, "delta": {"content": piece.text} if piece.text else {}, "finish_reason": piece.finish_reason,
            "logprobs": None}


def _chat_message(i: int, piece: Piece) -> dict[str, Any]:
    return {"index": i, "message": {"role": "assistant", "content": piece.text}, "finish_reason": piece.finish_reason,
            "logprobs": None}


def _text_choice(i: int, piece: Piece) -> dict[str, Any]:
    return {"index": i, "text": piece.text, "finish_reason": piece.finish_reason, "logprobs": None}


@dataclass(frozen=True)
class Route:
    """What differs between the two completion routes: the request body and the shape of a choice."""

    path: str
    body: type[ChatRequest] | type[CompletionRequest]
    opening: Callable[[int], dict[str, Any]] | None  # streamed: choice i's first chunk, before any text (if any)
    chunk: Callable[[int, Piece], dict[str, Any]]  # streamed: choice i's text (or its end)
    choice: Callable[[int, Piece], dict[str, Any]]  # whole: choice i, complete


CHAT = Route(CHAT_PATH, ChatRequest, _chat_opening, _chat_delta, _chat_message)
TEXT = Route("/v1/completions", CompletionRequest, None, _text_choice, _text_choice)

__all__ = ["CHAT", "TEXT", "Call", "Route", "chunk", "envelope", "sse", "usage"]
