"""OpenAI-style errors: `{"error": {"message", "type", "param", "code"}}` with an HTTP status.

patchkit's own error classes map to a status and a stable `code` here, once, the way the CLI
maps them to exit codes. A client gets the code and a short reason in the shape its OpenAI SDK
already parses; never the server's file paths, registry URL or CLI advice (`patchkit trust
add …`), which are the operator's business. Those stay in `detail`, which the server logs.
"""

from __future__ import annotations

import sys
from typing import Any

from patchkit import errors


class APIError(Exception):
    """An error the server answers with, instead of a completion; `detail` goes to the server log only."""

    def __init__(self, status: int, message: str, *, type_: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, headers: dict[str, str] | None = None, detail: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.param = param
        self.headers = headers or {}
        self.detail = detail

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def log(self) -> None:
        """The operator's side of a refusal: the full reason, paths and hints included, on stderr."""
        if self.detail:
            print(f"patchkit: serve: {self.status} {self.code}: {self.detail}", file=sys.stderr, flush=True)


def bad_request(message: str, *, param: str | None = None, code: str = "invalid_value") -> APIError:
    return APIError(400, message, code=code, param=param)


def too_large(message: str, *, param: str | None = None) -> APIError:
    return APIError(413, message, code="too_large", param=param)


def body_timeout(seconds: float) -> APIError:
    # Connection: close -- the rest of a body that never came cannot be told from the next request.
    return APIError(408, f"the request body did not arrive within {seconds:g} s", code="request_timeout",
                    headers={"Connection": "close"})


def unauthorized() -> APIError:
    return APIError(401, "missing or wrong API key: send 'Authorization: Bearer $PATCHKIT_API_KEY'",
                    type_="authentication_error", code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})


def queue_full(limit: int) -> APIError:
    return APIError(429, f"the server is at capacity ({limit} requests running or queued); retry shortly",
                    type_="rate_limit_error", code="queue_full", headers={"Retry-After": "1"})


def draining() -> APIError:
    return APIError(503, "the server is shutting down and takes no new requests; retry on another replica",
                    type_="server_error", code="draining", headers={"Retry-After": "5"})


def unknown_model(model: str, served: str, *, detail: str | None = None) -> APIError:
    """404 for a `model` this server does not serve; the same body whatever the reason (nothing to probe)."""
    return APIError(404, f"unknown model {model!r}: use {served!r}, {served + '+NS/NAME@SPEC'!r} (a patch in this server's "
                    "registry) or an alias (GET /v1/models)", code="model_not_found", param="model", detail=detail)


# Each patchkit error class: status, type, stable code, and the short reason a client sees
# (the first match wins: subclasses first).
_PATCH_ERRORS: tuple[tuple[type[errors.PatchkitError], int, str, str, str], ...] = (
    (errors.NotFoundError, 404, "invalid_request_error", "model_not_found", "no such patch in this server's registry"),
    (errors.RevokedError, 403, "permission_error", "patch_revoked", "a patch is signed by a key its publisher revoked"),
    (errors.TrustError, 403, "permission_error", "patch_untrusted",
     "a patch is not signed by a key this server trusts for its namespace"),
    (errors.FreezeError, 403, "permission_error", "index_expired",
     "the registry's signed index of a patch has expired (freeze protection)"),
    (errors.IntegrityError, 403, "permission_error", "patch_integrity_failed", "a patch failed its integrity checks"),
    (errors.PolicyError, 403, "permission_error", "patch_policy_refused", "a patch does not meet this server's policy"),
    (errors.CompatibilityError, 400, "invalid_request_error", "patch_incompatible",
     "a patch was not built for this server's base model, or the patches do not compose"),
    (errors.InvalidInputError, 400, "invalid_request_error", "invalid_patch", "a patch or its spec is malformed"),
    (errors.UsageError, 400, "invalid_request_error", "invalid_value",
     "the patches cannot be composed as asked (e.g. one patch twice)"),
    (errors.RegistryError, 502, "server_error", "registry_unavailable", "the patch registry did not answer; retry later"),
)


def from_patchkit(exc: errors.PatchkitError, *, model: str | None = None, param: str | None = "model") -> APIError:
    """A refused patch set as the client should see it: a stable code and a short reason; the full text is `detail`."""
    about = f"model {model!r}: " if model is not None else ""
    for cls, status, type_, code, reason in _PATCH_ERRORS:
        if isinstance(exc, cls):
            return APIError(status, about + reason, type_=type_, code=code, param=param, detail=exc.one_line())
    return APIError(500, about + "the server failed to load it", type_="server_error", code="internal_error", param=param,
                    detail=exc.one_line())
