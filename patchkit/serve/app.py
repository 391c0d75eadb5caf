"""The HTTP front end: OpenAI's routes on FastAPI, the same for both engines.

A request goes: API key -> body size -> the whole body, read within `body_timeout_s` (408) and
parsed (400) -> draining / capacity (503, 429) -> the `model` field resolved to a verified patch
set (404, 403, 400) -> tokens and limits (413, 400) -> the engine. A capacity slot is taken only
once the body is in and valid, so clients that send headers and trickle (or never finish) a body
hold a connection for at most `body_timeout_s`, and never a slot. The patch set's digests go
back in the `X-Patchkit-Patches` header, in `usage.patches` and in `system_fingerprint`.

`/health` is liveness (200 while the process serves, 503 while draining) and says, without
waiting, what the last readiness check found; `/ready` waits for a check (reused for
`ready_interval_s`) and is 200 only if requests would be answered (see `readiness`).
Error bodies carry a stable code and a short reason; paths and CLI hints go to the server log.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from sse_starlette.sse import EventSourceResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from patchkit.constants import PATCHKIT_VERSION as __version__
from patchkit.errors import UsageError
from patchkit.serve.config import ServeConfig
from patchkit.serve.errors import APIError, bad_request, body_timeout, draining, queue_full, too_large, unauthorized
from patchkit.serve.jobs import FINISH_CANCELLED, FINISH_ERROR, Engine, Job, Piece
from patchkit.serve.metrics import Metrics
from patchkit.serve.patches import PatchResolver, PatchSet, is_ref
from patchkit.serve.protocol import ChatRequest, CompletionRequest, parse_body
from patchkit.serve.readiness import Readiness, Report

PATCH_HEADER = "X-Patchkit-Patches"
OPEN_PATHS = ("/health", "/ready")
ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/ready", "/metrics")
DISCONNECT_POLL_S = 0.2

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass
class ServerState:
    """Everything a route needs; one per server."""

    engine: Engine
    resolver: PatchResolver
    config: ServeConfig
    metrics: Metrics
    name: str
    api_key: str | None = None
    draining: bool = False
    in_flight: int = 0
    started: float = field(default_factory=time.time)
    idle: asyncio.Event | None = None
    readiness: Readiness = field(init=False)  # follows the engine and the resolver above

    def __post_init__(self) -> None:
        self.readiness = Readiness(self.engine, self.resolver, interval_s=self.config.ready_interval_s)

    @property
    def capacity(self) -> int:
        return self.config.limits.max_batch + self.config.limits.max_queue

    def admit(self) -> _Slot:
        if self.draining:
            raise draining()
        if self.in_flight >= self.capacity:
            raise queue_full(self.capacity)
        self.in_flight += 1
        self.metrics.in_flight.set(self.in_flight)
        if self.idle is not None:
            self.idle.clear()
        return _Slot(self)

    def release(self) -> None:
        self.in_flight -= 1
        self.metrics.in_flight.set(self.in_flight)
        if self.in_flight == 0 and self.idle is not None:
            self.idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        """After SIGTERM: True once every accepted request has been answered, False at the timeout."""
        if self.in_flight == 0 or self.idle is None:
            return self.in_flight == 0
        try:
            await asyncio.wait_for(self.idle.wait(), timeout)
        except TimeoutError:
            return False
        return True


class _Slot:
    """One accepted request's claim on capacity; released exactly once, when its answer is complete."""

    def __init__(self, state: ServerState) -> None:
        self._state: ServerState | None = state

    def release(self) -> None:
        if self._state is not None:
            self._state.release()
            self._state = None


class _SlotEventSource(EventSourceResponse):
    """An SSE response that gives its slot back however it ends, even if the client left before the first event."""

    def __init__(self, slot: _Slot, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slot = slot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._slot.release()


def _error_response(err: APIError) -> JSONResponse:
    err.log()
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


class _Guard:
    """ASGI middleware: the API key, the body-size limit, and per-status request counts."""

    def __init__(self, app: ASGIApp, state: ServerState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        endpoint = path if path in ENDPOINTS else "other"
        status_seen: list[int] = []

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_seen.append(int(message["status"]))
            await send(message)

        try:
            err = self._check(scope, path)
            if err is not None:
                await _error_response(err)(scope, receive, counting_send)
            else:
                await self.app(scope, receive, counting_send)
        finally:
            self.state.metrics.requests.labels(endpoint, str(status_seen[0] if status_seen else 499)).inc()

    def _check(self, scope: Scope, path: str) -> APIError | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        key = self.state.api_key
        if key is not None and path not in OPEN_PATHS:
            auth = headers.get("authorization", "")
            scheme, _, token = auth.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
                return unauthorized()
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                return bad_request("Content-Length is not a number", code="invalid_header")
            if int(length) > self.state.config.limits.max_body_bytes:
                return too_large(f"the request body is {length} bytes; this server takes at most "
                                 f"{self.state.config.limits.max_body_bytes}")
        return None


async def _read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The whole body within `timeout_s` (else 408), cut off past `limit` (a chunked upload has no Content-Length)."""
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise too_large(f"the request body is over {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise body_timeout(timeout_s) from None
    except ClientDisconnect:
        raise APIError(499, "the client closed the connection", code="client_closed") from None
    return b"".join(chunks)


def _usage(prompt: int, completion: int, ps: PatchSet) -> dict[str, Any]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prefix_tokens": ps.num_virtual_tokens, "patches": ps.usage()}


def _generation_error(piece: Piece) -> APIError:
    """What the client sees of a failed generation; the engine's own text (upstream URL, exception) is logged."""
    status = int(piece.extra.get("status", 500))
    if status == 502:
        return APIError(502, "generation failed: the inference backend did not answer", type_="server_error",
                        code="upstream_failed", detail=piece.error)
    return APIError(status, "generation failed", type_="server_error", code="generation_failed", detail=piece.error)


def _encode_error(exc: Exception) -> APIError | None:
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


def _sse(payload: dict[str, Any] | str) -> dict[str, str]:
    return {"data": payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))}


@dataclass
class _Call:
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
class _Route:
    """What differs between the two completion routes: the request body and the shape of a choice."""

    path: str
    body: type[ChatRequest] | type[CompletionRequest]
    opening: Callable[[int], dict[str, Any]] | None  # streamed: choice i's first chunk, before any text (if any)
    chunk: Callable[[int, Piece], dict[str, Any]]  # streamed: choice i's text (or its end)
    choice: Callable[[int, Piece], dict[str, Any]]  # whole: choice i, complete


_CHAT = _Route("/v1/chat/completions", ChatRequest, _chat_opening, _chat_delta, _chat_message)
_TEXT = _Route("/v1/completions", CompletionRequest, None, _text_choice, _text_choice)


def create_app(state: ServerState) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state.idle = asyncio.Event()
        state.idle.set()
        state.engine.start()
        await state.readiness.check()  # the first report, so /health has one from the start
        try:
            yield
        finally:
            await state.engine.aclose()

    app = FastAPI(title="patchkit serve", version=__version__, docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=lifespan)
    metrics = state.metrics
    engine = state.engine
    limits = state.config.limits

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        # Starlette logs the traceback and re-raises after this answer; the client gets no internals.
        return _error_response(APIError(500, "internal server error", type_="server_error", code="internal_error",
                                        detail=f"{type(exc).__name__}: {exc}"))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error_response(APIError(exc.status_code, str(exc.detail), code=code))

    # -- resolution and limits -----------------------------------------------------------
    async def patch_set(model: str) -> PatchSet:
        state.resolver.parse(model)  # a 404 for a name this server does not serve costs no thread
        hit = state.resolver.cached(model)
        if hit is not None:
            return hit
        try:
            ps = await asyncio.to_thread(state.resolver.resolve, model)
        except APIError as exc:
            metrics.refusals.labels(exc.code or "error").inc()
            raise
        metrics.patch_sets.set(len(state.resolver.known()))
        return ps

    def max_new(requested: int | None) -> int | None:
        """The request's max_tokens (checked against the limit); None: the default, fitted to the context later."""
        if requested is None:
            return None
        if requested > limits.max_tokens:
            raise bad_request(f"max_tokens is {requested}; this server allows at most {limits.max_tokens}", param="max_tokens")
        return requested

    def job(ids: list[int], ps: PatchSet, req: ChatRequest | CompletionRequest, asked: int | None, param: str) -> Job:
        if not ids:
            raise bad_request("the prompt has no tokens", param=param)
        if len(ids) > limits.max_prompt_tokens:
            raise too_large(f"the prompt is {len(ids)} tokens; this server takes at most {limits.max_prompt_tokens}", param=param)
        if any(t < 0 or t >= engine.vocab_size for t in ids):
            raise bad_request("the prompt holds token ids outside the vocabulary", param=param)
        n = asked if asked is not None else limits.default_max_tokens
        if asked is None and engine.max_positions is not None:
            n = max(1, min(n, engine.max_positions - ps.num_virtual_tokens - len(ids)))
        total = ps.num_virtual_tokens + len(ids) + n
        if engine.max_positions is not None and total > engine.max_positions:
            raise APIError(400, f"{ps.num_virtual_tokens} virtual + {len(ids)} prompt + {n} new tokens = {total}, over the "
                           f"model's {engine.max_positions} positions", code="context_length_exceeded", param="max_tokens")
        return Job(tuple(ids), ps, max_tokens=n, temperature=float(req.temperature or 0.0), top_p=float(req.top_p or 1.0),
                   seed=req.seed, stop=req.stop_list(), ignore_eos=req.ignore_eos, min_tokens=min(req.min_tokens, n))

    # -- running a call --------------------------------------------------------------------
    def account(ps: PatchSet, last: Piece) -> None:
        metrics.finished.labels(last.finish_reason or "unknown").inc()
        metrics.prompt_tokens.inc(last.prompt_tokens)
        metrics.completion_tokens.inc(last.completion_tokens)
        for p in ps.patches:
            metrics.patch_requests.labels(p.ref, p.digest or "unverified").inc()

    async def tracked(call: _Call, j: Job) -> AsyncGenerator[Piece, None]:
        """The engine's pieces, counted once per job: a job its client abandoned counts as cancelled."""
        last = Piece("", 0, prompt_tokens=len(j.prompt_ids))
        try:
            async with contextlib.aclosing(engine.stream(j)) as pieces:
                async for piece in pieces:
                    last = piece
                    yield piece
        finally:
            if last.finish_reason is None:
                last = Piece("", last.completion_tokens, FINISH_CANCELLED, prompt_tokens=len(j.prompt_ids))
            account(call.patch_set, last)

    async def collect(call: _Call, j: Job, first: list[float]) -> Piece:
        text: list[str] = []
        last = Piece("", 0)
        async with contextlib.aclosing(tracked(call, j)) as pieces:
            async for piece in pieces:
                if piece.text and not first:
                    first.append(time.perf_counter())
                text.append(piece.text)
                last = piece
        if last.finish_reason == FINISH_ERROR:
            raise _generation_error(last)
        return Piece("".join(text), last.completion_tokens, last.finish_reason, prompt_tokens=last.prompt_tokens)

    async def run_whole(request: Request, call: _Call) -> list[Piece]:
        """Non-streamed: wait for every choice, cancelling them all if the client goes away."""
        first: list[float] = []
        work = asyncio.ensure_future(asyncio.gather(*(collect(call, j, first) for j in call.jobs)))
        while not work.done():
            await asyncio.wait([work], timeout=DISCONNECT_POLL_S)
            if not work.done() and await request.is_disconnected():
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await work
                raise APIError(499, "the client closed the connection", code="client_closed")
        results = work.result()
        if first:
            metrics.ttft.labels(call.endpoint).observe(first[0] - call.started)
        metrics.latency.labels(call.endpoint).observe(time.perf_counter() - call.started)
        return results

    async def merged(call: _Call) -> AsyncIterator[tuple[int, Piece]]:
        """Streamed: every choice's pieces as they come, tagged with the choice index."""
        queue: asyncio.Queue[tuple[int, Piece | BaseException]] = asyncio.Queue()

        async def pump(i: int, j: Job) -> None:
            try:
                async with contextlib.aclosing(tracked(call, j)) as pieces:
                    async for piece in pieces:
                        await queue.put((i, piece))
            except BaseException as exc:  # handed to the consumer, which re-raises it
                await queue.put((i, exc))
                raise

        tasks = [asyncio.create_task(pump(i, j)) for i, j in enumerate(call.jobs)]
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

    def stream_response(call: _Call, slot: _Slot, route: _Route) -> EventSourceResponse:
        def chunk(choice: dict[str, Any]) -> dict[str, Any]:
            return {**_envelope(call, "chunk"), "choices": [choice]}

        async def events() -> AsyncIterator[dict[str, str]]:
            got_first = False
            prompt = completion = 0
            try:
                if route.opening is not None:
                    for i in range(len(call.jobs)):
                        yield _sse(chunk(route.opening(i)))
                async for i, piece in merged(call):
                    if piece.text and not got_first:
                        got_first = True
                        metrics.ttft.labels(call.endpoint).observe(time.perf_counter() - call.started)
                    if piece.finish_reason == FINISH_ERROR:
                        err = _generation_error(piece)
                        err.log()
                        yield _sse(err.body())
                        break
                    if piece.finish_reason == FINISH_CANCELLED:
                        return
                    if piece.finish_reason is not None:
                        prompt += piece.prompt_tokens
                        completion += piece.completion_tokens
                    if piece.text or piece.finish_reason is not None:
                        yield _sse(chunk(route.chunk(i, piece)))
                if call.include_usage:
                    yield _sse({**_envelope(call, "chunk"), "choices": [], "usage": _usage(prompt, completion, call.patch_set)})
                yield _sse("[DONE]")
                metrics.latency.labels(call.endpoint).observe(time.perf_counter() - call.started)
            finally:
                slot.release()

        return _SlotEventSource(slot, events(), sep="\n", ping=15, headers={PATCH_HEADER: call.patch_set.header(),
                                                                              "Cache-Control": "no-cache"})

    def _envelope(call: _Call, kind: str) -> dict[str, Any]:
        if call.endpoint == _CHAT.path:
            obj = "chat.completion.chunk" if kind == "chunk" else "chat.completion"
        else:
            obj = "text_completion"
        env: dict[str, Any] = {"id": call.id, "object": obj, "created": call.created, "model": call.model,
                               "system_fingerprint": call.patch_set.fingerprint()}
        if call.include_usage and kind == "chunk":
            env["usage"] = None
        return env

    async def encode(prompt: str | list[dict[str, str]], *, chat: bool) -> list[int]:
        try:
            return await asyncio.to_thread(engine.encode, prompt, chat=chat)
        except Exception as exc:
            err = _encode_error(exc) if chat else None
            if err is None:
                raise
            raise err from None

    async def start_call(request: Request, route: _Route) -> tuple[_Call, _Slot]:
        if state.draining:
            raise draining()
        # The body is read and parsed before a slot is taken: a slow or unfinished body holds no slot.
        req = parse_body(route.body, await _read_body(request, limits.max_body_bytes, limits.body_timeout_s))
        slot = state.admit()
        try:
            ps = await patch_set(req.model)
            n = max_new(req.requested_max_tokens())
            jobs: list[Job] = []
            if isinstance(req, ChatRequest):
                ids = await encode(req.chat_messages(), chat=True)
                jobs.append(job(ids, ps, req, n, "messages"))
            else:
                prompts = req.prompts()
                if len(prompts) > limits.max_prompts:
                    raise bad_request(f"{len(prompts)} prompts in one request; this server takes at most {limits.max_prompts}",
                                      param="prompt")
                for p in prompts:
                    ids = list(p) if isinstance(p, list) else await encode(p, chat=False)
                    jobs.append(job(ids, ps, req, n, "prompt"))
            prefix = "chatcmpl-" if isinstance(req, ChatRequest) else "cmpl-"
            call = _Call(route.path, req.model, ps, jobs, bool(req.stream), req.include_usage(), time.perf_counter(),
                         prefix + uuid.uuid4().hex, int(time.time()))
        except BaseException:
            slot.release()
            raise
        return call, slot

    async def complete(request: Request, route: _Route) -> Response:
        """One completion request, streamed or whole, in the route's shapes; the slot is given back however it ends."""
        call, slot = await start_call(request, route)
        if call.stream:
            return stream_response(call, slot, route)
        try:
            results = await run_whole(request, call)
        finally:
            slot.release()
        body = {**_envelope(call, "whole"), "choices": [route.choice(i, p) for i, p in enumerate(results)],
                "usage": _usage(sum(p.prompt_tokens for p in results), sum(p.completion_tokens for p in results), call.patch_set)}
        return JSONResponse(body, headers={PATCH_HEADER: call.patch_set.header()})

    # -- routes ----------------------------------------------------------------------------
    @app.post(_CHAT.path, response_model=None)
    async def chat_completions(request: Request) -> Response:
        return await complete(request, _CHAT)

    @app.post(_TEXT.path, response_model=None)
    async def completions(request: Request) -> Response:
        return await complete(request, _TEXT)

    def model_cards() -> list[dict[str, Any]]:
        created = int(state.started)
        cards: dict[str, dict[str, Any]] = {}
        for ps in state.resolver.known():
            cards[ps.model] = {"id": ps.model, "object": "model", "created": created, "owned_by": "patchkit",
                               "root": state.name, "patches": ps.usage(), "verified": True}
        base = cards.pop(state.name) if state.name in cards else {"id": state.name, "object": "model", "created": created,
                                               "owned_by": "patchkit", "root": state.name, "patches": None, "verified": False}
        out = [base]
        for alias, specs in state.config.aliases.items():
            shown = [s if is_ref(s) else "(artifact directory)" for s in specs]  # the server's paths stay private
            out.append(cards.pop(alias) if alias in cards else {"id": alias, "object": "model", "created": created, "owned_by": "patchkit",
                                                  "root": state.name, "alias_of": shown, "patches": None, "verified": False})
        return out + list(cards.values())

    @app.get("/v1/models")
    async def list_models() -> JSONResponse:
        return JSONResponse({"object": "list", "data": model_cards()})

    @app.get("/v1/models/{model:path}")
    async def get_model(model: str) -> JSONResponse:
        for card in model_cards():
            if card["id"] == model:
                return JSONResponse(card)
        state.resolver.parse(model)  # 404 for a name this server does not serve
        return JSONResponse({"id": model, "object": "model", "created": int(state.started), "owned_by": "patchkit",
                             "root": state.name, "patches": None, "verified": False})

    def health_body(report: Report | None) -> dict[str, Any]:
        ready = report is not None and report.ready and not state.draining
        status = "draining" if state.draining else "ok" if ready else "not_ready" if report is not None else "starting"
        info = {k: v for k, v in engine.describe().items() if k != "vllm_url"}  # an open route: no internal URLs
        return {"status": status, "live": True, "ready": ready,
                "not_ready": list(report.problems) if report is not None else [],
                "checked_s_ago": round(report.age(), 3) if report is not None else None,
                "model": state.name, "running": engine.running, "waiting": engine.waiting, "in_flight": state.in_flight,
                "capacity": state.capacity, **info}

    @app.get("/health")
    async def health() -> JSONResponse:
        """Liveness: 200 while the process serves (503 draining); the body says what the last readiness check found."""
        state.readiness.kick()  # refresh in the background when stale; a liveness probe never waits on vLLM or a registry
        return JSONResponse(health_body(state.readiness.last), status_code=503 if state.draining else 200)

    @app.get("/ready")
    async def ready() -> JSONResponse:
        """Readiness: 200 only if the engine answers and every served model still verifies; else 503 and what is not."""
        report = await state.readiness.check()
        body = health_body(report)
        return JSONResponse(body, status_code=200 if body["ready"] else 503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    metrics.bind(waiting=lambda: float(engine.waiting), running=lambda: float(engine.running))
    guarded = _Guard(app, state)
    app.state.patchkit = state
    app.state.guarded = guarded
    return app


def asgi(state: ServerState) -> ASGIApp:
    """The app behind its guard (API key, body size, request counts): what uvicorn serves."""
    app = create_app(state)
    guarded: ASGIApp = app.state.guarded
    return guarded


__all__ = ["PATCH_HEADER", "ServerState", "asgi", "create_app"]
