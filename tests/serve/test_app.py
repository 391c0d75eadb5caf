"""The HTTP routes in process (torch-free): a scripted engine behind the real app, driven over raw ASGI.

Pins the OpenAI shapes of both completion routes, whole and streamed, and that an accepted request
gives its capacity slot back however it ends: answered, refused, failed, or abandoned by its client.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path
from typing import Any

import pytest

from patchkit.runtime.resolve import LoadedPatch
from patchkit.serve.app import ServerState, asgi
from patchkit.serve.config import ServeConfig
from patchkit.serve.jobs import FINISH_ERROR, FINISH_STOP, Engine, Job, Piece
from patchkit.serve.metrics import Metrics
from patchkit.serve.patches import PatchResolver
from patchkit.trust.store import TrustStore
from tests.helpers import write_fake_model

CHAT = "/v1/chat/completions"
TEXT = "/v1/completions"
HANG = "hang"  # a prompt the engine never finishes: only the client leaving ends it


class ScriptedEngine(Engine):
    """Each job: one piece per word of its script, then `stop` (or `error`, or a hang, or an exception)."""

    kind = "scripted"

    def __init__(self, end: str = FINISH_STOP) -> None:
        self.tokenizer = list(range(100))
        self.end = end
        self.closed = 0

    def encode(self, prompt: str | Sequence[dict[str, str]], *, chat: bool) -> list[int]:
        text = prompt[-1]["content"] if not isinstance(prompt, str) else prompt
        return [len(w) for w in text.split()]

    async def stream(self, job: Job) -> AsyncGenerator[Piece, None]:
        words = [f"w{t}" for t in job.prompt_ids]
        try:
            for n, w in enumerate(words, 1):
                yield Piece(w, n)
                await asyncio.sleep(0)
            if self.end == HANG:
                await asyncio.Event().wait()
            if self.end == "raise":
                raise RuntimeError("the engine broke")
            yield Piece("", len(words), self.end, error="boom" if self.end == FINISH_ERROR else None,
                        prompt_tokens=len(job.prompt_ids))
        finally:
            self.closed += 1

    @property
    def running(self) -> int:
        return 0

    @property
    def waiting(self) -> int:
        return 0


class NoLockResolver(PatchResolver):
    """The real resolver (grammar, cache, refusals) over a model with no patches at all."""

    def _load(self, specs: Sequence[str] | None) -> list[LoadedPatch]:
        return []


def _state(tmp_path: Path, engine: Engine) -> ServerState:
    config = ServeConfig(name="tiny")
    resolver = NoLockResolver(write_fake_model(tmp_path / "model"), config, name="tiny", trust=TrustStore.load(), registry=None)
    return ServerState(engine=engine, resolver=resolver, config=config, metrics=Metrics(), name="tiny")


async def _post(app: Any, path: str, body: dict[str, Any] | bytes, *, leave_after: float | None = None) -> tuple[int, dict[str, str], bytes]:
    """One POST over ASGI: status, headers, body; `leave_after`: the client disconnects after that many seconds."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "client": ("127.0.0.1", 5),
             "server": ("127.0.0.1", 80),
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]}
    gone = asyncio.Event()
    state = {"sent": False}
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if not state["sent"]:
            state["sent"] = True
            return {"type": "http.request", "body": raw, "more_body": False}
        await gone.wait()  # the client stays until its answer is complete, or until it leaves
        return {"type": "http.disconnect"}

    async def leave() -> None:
        assert leave_after is not None
        await asyncio.sleep(leave_after)
        gone.set()

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            gone.set()

    leaving = asyncio.create_task(leave()) if leave_after is not None else None
    try:
        await app(scope, receive, send)
    except RuntimeError:
        pass  # an unhandled error: Starlette sent its 500 and re-raised
    finally:
        if leaving is not None:
            leaving.cancel()
    start = next((m for m in messages if m["type"] == "http.response.start"), None)
    status = int(start["status"]) if start else 499
    headers = {k.decode().lower(): v.decode() for k, v in start["headers"]} if start else {}
    return status, headers, b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")


def _events(raw: bytes) -> list[Any]:
    out: list[Any] = []
    for line in raw.decode().splitlines():
        if line.startswith("data: "):
            data = line[len("data: "):]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def _run(state: ServerState, path: str, body: dict[str, Any] | bytes, **kw: Any) -> tuple[int, dict[str, str], bytes]:
    status, headers, raw = asyncio.run(_post(asgi(state), path, body, **kw))
    assert state.in_flight == 0, "the slot was not given back"
    return status, headers, raw


def _same_call(bodies: list[dict[str, Any]], prefix: str) -> tuple[str, int]:
    ids = {b["id"] for b in bodies}
    created = {b["created"] for b in bodies}
    assert len(ids) == 1 and len(created) == 1, (ids, created)
    (call_id,), (when,) = ids, created
    assert call_id.startswith(prefix) and len(call_id) == len(prefix) + 32
    return call_id, when


FP = "pk-" + "e3b0c44298fc1c14"  # sha256 of the empty patch list
USAGE = {"prefix_tokens": 0, "patches": []}


def test_chat_whole_shape(tmp_path: Path) -> None:
    status, headers, raw = _run(_state(tmp_path, ScriptedEngine()), CHAT,
                                {"model": "tiny", "messages": [{"role": "user", "content": "one three"}]})
    assert status == 200 and headers["x-patchkit-patches"] == "none" and headers["content-type"] == "application/json"
    body = json.loads(raw)
    call_id, when = _same_call([body], "chatcmpl-")
    assert list(body) == ["id", "object", "created", "model", "system_fingerprint", "choices", "usage"]
    assert body == {"id": call_id, "object": "chat.completion", "created": when, "model": "tiny", "system_fingerprint": FP,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "w3w5"}, "finish_reason": "stop",
                                 "logprobs": None}],
                    "usage": {"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4, **USAGE}}
    assert list(body["choices"][0]) == ["index", "message", "finish_reason", "logprobs"]


def test_completions_whole_shape_two_prompts(tmp_path: Path) -> None:
    status, headers, raw = _run(_state(tmp_path, ScriptedEngine()), TEXT, {"model": "tiny", "prompt": ["ab", "abc de f"]})
    assert status == 200 and headers["x-patchkit-patches"] == "none"
    body = json.loads(raw)
    call_id, when = _same_call([body], "cmpl-")
    assert list(body) == ["id", "object", "created", "model", "system_fingerprint", "choices", "usage"]
    assert body == {"id": call_id, "object": "text_completion", "created": when, "model": "tiny", "system_fingerprint": FP,
                    "choices": [{"index": 0, "text": "w2", "finish_reason": "stop", "logprobs": None},
                                {"index": 1, "text": "w3w2w1", "finish_reason": "stop", "logprobs": None}],
                    "usage": {"prompt_tokens": 4, "completion_tokens": 4, "total_tokens": 8, **USAGE}}
    assert list(body["choices"][1]) == ["index", "text", "finish_reason", "logprobs"]


def test_chat_stream_shape(tmp_path: Path) -> None:
    status, headers, raw = _run(_state(tmp_path, ScriptedEngine()), CHAT,
                                {"model": "tiny", "messages": [{"role": "user", "content": "one three"}], "stream": True,
                                 "stream_options": {"include_usage": True}})
    assert status == 200 and headers["x-patchkit-patches"] == "none" and headers["cache-control"] == "no-cache"
    assert headers["content-type"].startswith("text/event-stream")
    *chunks, done = _events(raw)
    assert done == "[DONE]"
    call_id, when = _same_call(chunks, "chatcmpl-")
    env = {"id": call_id, "object": "chat.completion.chunk", "created": when, "model": "tiny", "system_fingerprint": FP}
    assert [list(c) for c in chunks[:-1]] == [["id", "object", "created", "model", "system_fingerprint", "usage", "choices"]] * 4
    assert chunks == [
        {**env, "usage": None, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None,
                                            "logprobs": None}]},
        {**env, "usage": None, "choices": [{"index": 0, "delta": {"content": "w3"}, "finish_reason": None, "logprobs": None}]},
        {**env, "usage": None, "choices": [{"index": 0, "delta": {"content": "w5"}, "finish_reason": None, "logprobs": None}]},
        {**env, "usage": None, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop", "logprobs": None}]},
        {**env, "choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4, **USAGE}},
    ]


def test_completions_stream_shape_two_prompts(tmp_path: Path) -> None:
    status, headers, raw = _run(_state(tmp_path, ScriptedEngine()), TEXT,
                                {"model": "tiny", "prompt": ["ab", "abc de"], "stream": True})
    assert status == 200 and headers["x-patchkit-patches"] == "none" and headers["cache-control"] == "no-cache"
    *chunks, done = _events(raw)
    assert done == "[DONE]"
    call_id, when = _same_call(chunks, "cmpl-")
    env = {"id": call_id, "object": "text_completion", "created": when, "model": "tiny", "system_fingerprint": FP}
    assert all(list(c) == ["id", "object", "created", "model", "system_fingerprint", "choices"] for c in chunks)
    assert all(c == {**env, "choices": c["choices"]} and len(c["choices"]) == 1 for c in chunks)  # no opening chunk, no usage
    by_choice: dict[int, list[Any]] = {0: [], 1: []}
    for c in chunks:
        choice = c["choices"][0]
        assert list(choice) == ["index", "text", "finish_reason", "logprobs"] and choice["logprobs"] is None
        by_choice[choice["index"]].append((choice["text"], choice["finish_reason"]))
    assert by_choice == {0: [("w2", None), ("", "stop")], 1: [("w3", None), ("w2", None), ("", "stop")]}


@pytest.mark.parametrize("path", [CHAT, TEXT])
def test_generation_error_whole_gives_the_slot_back(tmp_path: Path, path: str, capsys: pytest.CaptureFixture[str]) -> None:
    body = {"model": "tiny", "messages": [{"role": "user", "content": "a b"}]} if path == CHAT else {"model": "tiny", "prompt": "a b"}
    status, _, raw = _run(_state(tmp_path, ScriptedEngine(FINISH_ERROR)), path, body)
    assert status == 500
    assert json.loads(raw) == {"error": {"message": "generation failed", "type": "server_error", "param": None,
                                         "code": "generation_failed"}}
    assert "patchkit: serve: 500 generation_failed: boom" in capsys.readouterr().err  # the engine's reason: the log only


@pytest.mark.parametrize("path", [CHAT, TEXT])
def test_engine_exception_whole_gives_the_slot_back(tmp_path: Path, path: str) -> None:
    body = {"model": "tiny", "messages": [{"role": "user", "content": "a b"}]} if path == CHAT else {"model": "tiny", "prompt": "a b"}
    status, _, _ = _run(_state(tmp_path, ScriptedEngine("raise")), path, body)
    assert status == 500


def test_generation_error_streamed_is_an_error_event(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, raw = _run(_state(tmp_path, ScriptedEngine(FINISH_ERROR)), TEXT, {"model": "tiny", "prompt": "a", "stream": True})
    assert status == 200
    events = _events(raw)
    assert events[-2:] == [{"error": {"message": "generation failed", "type": "server_error", "param": None,
                                      "code": "generation_failed"}}, "[DONE]"]
    assert "patchkit: serve: 500 generation_failed: boom" in capsys.readouterr().err


@pytest.mark.parametrize("path", [CHAT, TEXT])
def test_refused_request_gives_the_slot_back(tmp_path: Path, path: str) -> None:
    status, _, raw = _run(_state(tmp_path, ScriptedEngine()), path, {"model": "gpt-4o", "messages": [], "prompt": "x"})
    assert status in (400, 404) and "error" in json.loads(raw)
    status, _, raw = _run(_state(tmp_path, ScriptedEngine()), path, b"{not json")
    assert status == 400 and json.loads(raw)["error"]["code"] == "invalid_json"


@pytest.mark.parametrize(("path", "stream"), [(CHAT, False), (TEXT, False), (CHAT, True), (TEXT, True)])
def test_client_leaving_gives_the_slot_back_and_cancels(tmp_path: Path, path: str, stream: bool) -> None:
    engine = ScriptedEngine(HANG)
    body = ({"model": "tiny", "messages": [{"role": "user", "content": "a b"}]} if path == CHAT
            else {"model": "tiny", "prompt": ["a b", "c"]})
    state = _state(tmp_path, engine)
    status, _, _ = _run(state, path, {**body, "stream": stream}, leave_after=0.5)
    assert status == (200 if stream else 499)
    assert engine.closed == (1 if path == CHAT else 2)  # every job was cancelled, none left generating
    finished = {s.labels["reason"]: s.value for m in state.metrics.finished.collect() for s in m.samples
                if s.name.endswith("_total")}
    assert finished == {"cancelled": engine.closed}
