"""The completion service: from an admitted request to an answer, streamed or whole.

After admission (`admission`) hands over a parsed body and a slot: the `model` field is resolved
to a verified patch set (404, 403, 400), the prompt is encoded (a chat template that cannot
format the messages is the client's 400) and checked against the limits (413, 400), and the
engine runs one job per choice. A failed generation reaches the client as a stable code and a
short reason; the engine's own text (an upstream URL, an exception) goes to the server log.
A client that leaves cancels its jobs, and the slot is given back however the answer ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from sse_starlette.sse import EventSourceResponse

from patchkit.errors import UsageError
from patchkit.serve.admission import Admission, AnyRequest, Receive, Scope, Send, Slot
from patchkit.serve.errors import APIError, bad_request, too_large
from patchkit.serve.jobs import FINISH_CANCELLED, FINISH_ERROR, Job, Piece
from patchkit.serve.patches import PatchSet
from patchkit.serve.protocol import ChatRequest
from patchkit.serve.shapes import CHAT, TEXT, Call, Route, chunk, envelope, sse, usage
from patchkit.serve.state import ServerState

PATCH_HEADER = "X-Patchkit-Patches"
DISCONNECT_POLL_S = 0.2


def generation_error(piece: Piece) -> APIError:
    """What the client sees of a failed generation; the engine's own text (upstream URL, exception) is logged."""
    status = int(piece.extra.get("status", 500))
    if status == 502:
        return APIError(502, "generation failed: the inference backend did not answer", type_="server_error",
                        code="upstream_failed", detail=piece.error)
    return APIError(status, "generation failed", type_="server_error", code="generation_failed", detail=piece.error)


def encode_error(exc: Exception) -> APIError | None:
    """A chat request the model's chat template cannot format: the client's 400, not the server's 500."""
    if isinstance(exc, UsageError):
        return APIError(400, "this model has no chat template: send the prompt as text to /v1/completions",
                        code="chat_template_missing", param="messages", detail=exc.one_line())
    try:
        from jinja2.exceptions import TemplateError
    except ImportError:
        return None
    if isinstance(exc, TemplateError):
        return APIError(400, f"the model's chat template refused these messages: {exc}", code="invalid_value",
                        param="messages", detail=f"{type(exc).__name__}: {exc}")
    return None


class _SlotEventSource(EventSourceResponse):
    """An SSE response that gives its slot back however it ends, even if the client left before the first event."""

    def __init__(self, slot: Slot, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slot = slot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._slot.release()


class CompletionService:
    """Both completion routes: one request's validation, its jobs on the engine, and its answer."""

    def __init__(self, state: ServerState, admission: Admission) -> None:
        self.state = state
        self.admission = admission
        self.engine = state.engine
        self.limits = state.config.limits
        self.metrics = state.metrics

    async def chat(self, request: Request) -> Response:
        return await self.complete(request, CHAT)

    async def text(self, request: Request) -> Response:
        return await self.complete(request, TEXT)

    async def complete(self, request: Request, route: Route) -> Response:
        """One completion request, streamed or whole, in the route's shapes; the slot is given back however it ends."""
        req, slot = await self.admission.take(request, route.body)
        try:
            call = await self._call(route, req)
        except BaseException:
            slot.release()
            raise
        if call.stream:
            return _SlotEventSource(slot, self._events(call, slot, route), sep="\n", ping=15,
                                    headers={PATCH_HEADER: call.patch_set.header(), "Cache-Control": "no-cache"})
        try:
            results = await self._run_whole(request, call)
        finally:
            slot.release()
        body = {**envelope(call, "whole"), "choices": [route.choice(i, p) for i, p in enumerate(results)],
                "usage": usage(sum(p.prompt_tokens for p in results), sum(p.completion_tokens for p in results),
                               call.patch_set)}
        return JSONResponse(body, headers={PATCH_HEADER: call.patch_set.header()})

    # -- from a request to its jobs ---------------------------------------------------------
    async def _call(self, route: Route, req: AnyRequest) -> Call:
        ps = await self._patch_set(req.model)
        n = self._max_new(req.requested_max_tokens())
        jobs: list[Job] = []
        if isinstance(req, ChatRequest):
            ids = await self._encode(req.chat_messages(), chat=True)
            jobs.append(self._job(ids, ps, req, n, "messages"))
        else:
            prompts = req.prompts()
            if len(prompts) > self.limits.max_prompts:
                raise bad_request(f"{len(prompts)} prompts in one request; this server takes at most "
                                  f"{self.limits.max_prompts}", param="prompt")
            for p in prompts:
                ids = list(p) if isinstance(p, list) else await self._encode(p, chat=False)
                jobs.append(self._job(ids, ps, req, n, "prompt"))
        prefix = "chatcmpl-" if isinstance(req, ChatRequest) else "cmpl-"
        return Call(route.path, req.model, ps, jobs, bool(req.stream), req.include_usage(), time.perf_counter(),
                    prefix + uuid.uuid4().hex, int(time.time()))

    async def _patch_set(self, model: str) -> PatchSet:
        resolver = self.state.resolver
        resolver.parse(model)  # a 404 for a name this server does not serve costs no thread
        hit = resolver.cached(model)
        if hit is not None:
            return hit
        try:
            ps = await asyncio.to_thread(resolver.resolve, model)
        except APIError as exc:
            self.metrics.refusals.labels(exc.code or "error").inc()
            raise
        self.metrics.patch_sets.set(len(resolver.known()))
        return ps

    def _max_new(self, requested: int | None) -> int | None:
        """The request's max_tokens (checked against the limit); None: the default, fitted to the context later."""
        if requested is None:
            return None
        if requested > self.limits.max_tokens:
            raise bad_request(f"max_tokens is {requested}; this server allows at most {self.limits.max_tokens}",
                              param="max_tokens")
        return requested

    async def _encode(self, prompt: str | list[dict[str, str]], *, chat: bool) -> list[int]:
        try:
            return await asyncio.to_thread(self.engine.encode, prompt, chat=chat)
        except Exception as exc:
            err = encode_error(exc) if chat else None
            if err is None:
                raise
            raise err from None

    def _job(self, ids: list[int], ps: PatchSet, req: AnyRequest, asked: int | None, param: str) -> Job:
        """One choice's job, if the prompt fits the limits and, with its prefix and new tokens, the model's context."""
        limits, engine = self.limits, self.engine
        if not ids:
            raise bad_request("the prompt has no tokens", param=param)
        if len(ids) > limits.max_prompt_tokens:
            raise too_large(f"the prompt is {len(ids)} tokens; this server takes at most {limits.max_prompt_tokens}",
                            param=param)
        if any(t < 0 or t >= engine.vocab_size for t in ids):
            raise bad_request("the prompt holds token ids outside the vocabulary", param=param)
        n = asked if asked is not None else limits.default_max_tokens
        if asked is None and engine.max_positions is not None:
            n = max(1, min(n, engine.max_positions - ps.num_virtual_tokens - len(ids)))
        total = ps.num_virtual_tokens + len(ids) + n
        if engine.max_positions is not None and total > engine.max_positions:
            raise APIError(400, f"{ps.num_virtual_tokens} virtual + {len(ids)} prompt + {n} new tokens = {total}, over "
                           f"the model's {engine.max_positions} positions", code="context_length_exceeded",
                           param="max_tokens")
        return Job(tuple(ids), ps, max_tokens=n, temperature=float(req.temperature or 0.0),
                   top_p=float(req.top_p or 1.0), seed=req.seed, stop=req.stop_list(), ignore_eos=req.ignore_eos,
                   min_tokens=min(req.min_tokens, n))

    # -- running the jobs -------------------------------------------------------------------
    def _account(self, ps: PatchSet, last: Piece) -> None:
        metrics = self.metrics
        metrics.finished.labels(last.finish_reason or "unknown").inc()
        metrics.prompt_tokens.inc(last.prompt_tokens)
        metrics.completion_tokens.inc(last.completion_tokens)
        for p in ps.patches:
            metrics.patch_requests.labels(p.ref, p.digest or "unverified").inc()

    async def _tracked(self, call: Call, j: Job) -> AsyncGenerator[Piece, None]:
        """The engine's pieces, counted once per job: a job its client abandoned counts as cancelled."""
        last = Piece("", 0, prompt_tokens=len(j.prompt_ids))
        try:
            async with contextlib.aclosing(self.engine.stream(j)) as pieces:
                async for piece in pieces:
                    last = piece
                    yield piece
        finally:
            if last.finish_reason is None:
                last = Piece("", last.completion_tokens, FINISH_CANCELLED, prompt_tokens=len(j.prompt_ids))
            self._account(call.patch_set, last)

    async def _collect(self, call: Call, j: Job, first: list[float]) -> Piece:
        """One choice, whole: its text joined, or the client-safe error if generation failed."""
        text: list[str] = []
        last = Piece("", 0)
        async with contextlib.aclosing(self._tracked(call, j)) as pieces:
            async for piece in pieces:
                if piece.text and not first:
                    first.append(time.perf_counter())
                text.append(piece.text)
                last = piece
        if last.finish_reason == FINISH_ERROR:
            raise generation_error(last)
        return Piece("".join(text), last.completion_tokens, last.finish_reason, prompt_tokens=last.prompt_tokens)

    async def _run_whole(self, request: Request, call: Call) -> list[Piece]:
        """Non-streamed: wait for every choice, cancelling them all if the client goes away."""
        first: list[float] = []
        work = asyncio.ensure_future(asyncio.gather(*(self._collect(call, j, first) for j in call.jobs)))
        while not work.done():
            await asyncio.wait([work], timeout=DISCONNECT_POLL_S)
            if not work.done() and await request.is_disconnected():
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await work
                raise APIError(499, "the client closed the connection", code="client_closed")
        results = work.result()
        if first:
            self.metrics.ttft.labels(call.endpoint).observe(first[0] - call.started)
        self.metrics.latency.labels(call.endpoint).observe(time.perf_counter() - call.started)
        return results

    async def _pump(self, call: Call, i: int, j: Job, queue: asyncio.Queue[tuple[int, Piece | BaseException]]) -> None:
        try:
            async with contextlib.aclosing(self._tracked(call, j)) as pieces:
                async for piece in pieces:
                    await queue.put((i, piece))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            await queue.put((i, exc))
            raise

    async def _merged(self, call: Call) -> AsyncIterator[tuple[int, Piece]]:
        """Streamed: every choice's pieces as they come, tagged with the choice index."""
        queue: asyncio.Queue[tuple[int, Piece | BaseException]] = asyncio.Queue()
        tasks = [asyncio.create_task(self._pump(call, i, j, queue)) for i, j in enumerate(call.jobs)]
        open_choices = len(tasks)
        try:
            while open_choices:
                i, item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                if item.finish_reason is not None:
                    open_choices -= 1
                yield i, item
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _events(self, call: Call, slot: Slot, route: Route) -> AsyncIterator[dict[str, str]]:
        """Streamed: the SSE events, ending in `[DONE]`, or in an error event if generation failed."""
        got_first = False
        prompt = completion = 0
        try:
            if route.opening is not None:
                for i in range(len(call.jobs)):
                    yield sse(chunk(call, route.opening(i)))
            async for i, piece in self._merged(call):
                if piece.text and not got_first:
                    got_first = True
                    self.metrics.ttft.labels(call.endpoint).observe(time.perf_counter() - call.started)
                if piece.finish_reason == FINISH_ERROR:
                    err = generation_error(piece)
                    err.log()
                    yield sse(err.body())
                    break
                if piece.finish_reason == FINISH_CANCELLED:
                    return
                if piece.finish_reason is not None:
                    prompt += piece.prompt_tokens
                    completion += piece.completion_tokens
                if piece.text or piece.finish_reason is not None:
                    yield sse(chunk(call, route.chunk(i, piece)))
            if call.include_usage:
                yield sse({**envelope(call, "chunk"), "choices": [], "usage": usage(prompt, completion, call.patch_set)})
            yield sse("[DONE]")
            self.metrics.latency.labels(call.endpoint).observe(time.perf_counter() - call.started)
        finally:
            slot.release()


__all__ = ["DISCONNECT_POLL_S", "PATCH_HEADER", "CompletionService", "encode_error", "generation_error"]
