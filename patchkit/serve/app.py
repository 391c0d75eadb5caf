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

This module wires the routes and lists what is served (`Catalog`: /v1/models, /metrics). The
steps up to the slot, and /health and /ready, are the admission service's (`admission`); the
steps after it the completion service's (`completion`); the response shapes are in `shapes`,
and the state they share is `state.ServerState`.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from patchkit.constants import PATCHKIT_VERSION as __version__
from patchkit.serve.admission import Admission, ASGIApp, Guard, error_response
from patchkit.serve.completion import PATCH_HEADER, CompletionService
from patchkit.serve.errors import APIError
from patchkit.serve.patches import is_ref
from patchkit.serve.shapes import CHAT, TEXT
from patchkit.serve.state import ServerState


async def _api_error(_: Request, exc: APIError) -> JSONResponse:
    return error_response(exc)


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    # Starlette logs the traceback and re-raises after this answer; the client gets no internals.
    return error_response(APIError(500, "internal server error", type_="server_error", code="internal_error",
                                   detail=f"{type(exc).__name__}: {exc}"))


async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return error_response(APIError(exc.status_code, str(exc.detail), code=code))


class Catalog:
    """/v1/models and /metrics: what this server serves, and how much it has served."""

    def __init__(self, state: ServerState) -> None:
        self.state = state

    def _card(self, model: str, **fields: Any) -> dict[str, Any]:
        return {"id": model, "object": "model", "created": int(self.state.started), "owned_by": "patchkit",
                "root": self.state.name, **fields}

    def cards(self) -> list[dict[str, Any]]:
        """The base model, then each alias, then every other patch set served since start-up."""
        state = self.state
        cards = {ps.model: self._card(ps.model, patches=ps.usage(), verified=True) for ps in state.resolver.known()}
        out = [cards.pop(state.name) if state.name in cards else self._card(state.name, patches=None, verified=False)]
        for alias, specs in state.config.aliases.items():
            shown = [s if is_ref(s) else "(artifact directory)" for s in specs]  # the server's paths stay private
            out.append(cards.pop(alias) if alias in cards
                       else self._card(alias, alias_of=shown, patches=None, verified=False))
        return out + list(cards.values())

    async def list_models(self) -> JSONResponse:
        return JSONResponse({"object": "list", "data": self.cards()})

    async def get_model(self, model: str) -> JSONResponse:
        for card in self.cards():
            if card["id"] == model:
                return JSONResponse(card)
        self.state.resolver.parse(model)  # 404 for a name this server does not serve
        return JSONResponse(self._card(model, patches=None, verified=False))

    async def metrics(self) -> Response:
        return Response(self.state.metrics.render(), media_type=self.state.metrics.content_type)


def create_app(state: ServerState) -> FastAPI:
    """The routes, each handed to the service that answers it; `app.state.guarded` is the app behind its guard."""
    app = FastAPI(title="patchkit serve", version=__version__, docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=state.serving, exception_handlers={APIError: _api_error, Exception: _unexpected,
                                                              StarletteHTTPException: _http_error})
    admission = Admission(state)
    completions = CompletionService(state, admission)
    catalog = Catalog(state)

    app.add_api_route(CHAT.path, completions.chat, methods=["POST"], response_model=None)
    app.add_api_route(TEXT.path, completions.text, methods=["POST"], response_model=None)
    app.add_api_route("/v1/models", catalog.list_models, methods=["GET"])
    app.add_api_route("/v1/models/{model:path}", catalog.get_model, methods=["GET"])
    app.add_api_route("/health", admission.health, methods=["GET"])
    app.add_api_route("/ready", admission.ready, methods=["GET"])
    app.add_api_route("/metrics", catalog.metrics, methods=["GET"])
    state.metrics.bind(waiting=lambda: float(state.engine.waiting), running=lambda: float(state.engine.running))
    app.state.patchkit = state
    app.state.guarded = Guard(app, state)
    return app


def asgi(state: ServerState) -> ASGIApp:
    """The app behind its guard (API key, body size, request counts): what uvicorn serves."""
    app = create_app(state)
    guarded: ASGIApp = app.state.guarded
    return guarded


__all__ = ["PATCH_HEADER", "ServerState", "asgi", "create_app"]
