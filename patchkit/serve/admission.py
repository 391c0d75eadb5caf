"""Admission: which requests the server takes on, in what order it checks, and what it says about itself.

Before the app: `Guard` answers a wrong API key (401), a Content-Length that is not a number
(400) and a declared body over the limit (413) from the headers alone, and counts every answer
by route and status. In the app: `Admission.take` refuses while draining (503), reads the whole
body within `body_timeout_s` (408), cut off past the size limit (413), parses it (400), and only
then takes a capacity slot (503 while draining, 429 when full). A client that sends headers and
trickles, or never finishes, a body holds a connection for at most `body_timeout_s`, and never a
slot. A `Slot` is given back exactly once.

`/health` and `/ready` are answered here too: they say whether requests would be admitted
(liveness, draining, the last readiness check, the load) without any route's internals.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

from patchkit.serve.errors import APIError, bad_request, body_timeout, draining, queue_full, too_large, unauthorized
from patchkit.serve.protocol import ChatRequest, CompletionRequest, parse_body
from patchkit.serve.readiness import Report
from patchkit.serve.state import ServerState

OPEN_PATHS = ("/health", "/ready")
ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/ready", "/metrics")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
AnyRequest = ChatRequest | CompletionRequest


def error_response(err: APIError) -> JSONResponse:
    """Every refusal goes out this way: the operator's detail to the log, the client's body on the wire."""
    err.log()
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


class Slot:
    """One accepted request's claim on capacity; released exactly once, when its answer is complete."""

    def __init__(self, state: ServerState) -> None:
        self._state: ServerState | None = state

    def release(self) -> None:
        state, self._state = self._state, None
        if state is None:
            return
        state.in_flight -= 1
        state.metrics.in_flight.set(state.in_flight)
        if state.in_flight == 0 and state.idle is not None:
            state.idle.set()


class Guard:
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
                await error_response(err)(scope, receive, counting_send)
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


async def read_body(request: Request, limit: int, timeout_s: float) -> bytes:
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


class Admission:
    """The server's door: slots, the body read before a slot, and the health a load balancer sees."""

    def __init__(self, state: ServerState) -> None:
        self.state = state

    async def take(self, request: Request, body: type[AnyRequest]) -> tuple[AnyRequest, Slot]:
        """The parsed body and a slot; the body is read and parsed first, so a slow or unfinished body holds no slot."""
        if self.state.draining:
            raise draining()
        limits = self.state.config.limits
        req: AnyRequest = parse_body(body, await read_body(request, limits.max_body_bytes, limits.body_timeout_s))
        return req, self.admit()

    def admit(self) -> Slot:
        """A slot, or 503 while draining, or 429 when every batch row and queue place is taken."""
        state = self.state
        if state.draining:
            raise draining()
        if state.in_flight >= state.capacity:
            raise queue_full(state.capacity)
        state.in_flight += 1
        state.metrics.in_flight.set(state.in_flight)
        if state.idle is not None:
            state.idle.clear()
        return Slot(state)

    def health_body(self, report: Report | None) -> dict[str, Any]:
        state, engine = self.state, self.state.engine
        ready = report is not None and report.ready and not state.draining
        status = "draining" if state.draining else "ok" if ready else "not_ready" if report is not None else "starting"
        info = {k: v for k, v in engine.describe().items() if k != "vllm_url"}  # an open route: no internal URLs
        return {"status": status, "live": True, "ready": ready,
                "not_ready": list(report.problems) if report is not None else [],
                "checked_s_ago": round(report.age(), 3) if report is not None else None,
                "model": state.name, "running": engine.running, "waiting": engine.waiting, "in_flight": state.in_flight,
                "capacity": state.capacity, **info}

    async def health(self) -> JSONResponse:
        """Liveness: 200 while the process serves (503 draining); the body says what the last readiness check found."""
        readiness = self.state.readiness
        readiness.kick()  # refresh in the background when stale; a liveness probe never waits on vLLM or a registry
        return JSONResponse(self.health_body(readiness.last), status_code=503 if self.state.draining else 200)

    async def ready(self) -> JSONResponse:
        """Readiness: 200 only if the engine answers and every served model still verifies; else 503 and what is not."""
        report = await self.state.readiness.check()
        body = self.health_body(report)
        return JSONResponse(body, status_code=200 if body["ready"] else 503)


__all__ = ["ASGIApp", "Admission", "Guard", "Slot", "error_response", "read_body"]
