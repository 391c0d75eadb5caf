"""OpenAI-style errors: `{"error": {"message", "type", "param", "code"}}` with an HTTP status.

patchkit's own error classes map to a status here, once, the way the CLI maps them to exit
codes: a client sees why a patch was refused, in the shape its OpenAI SDK already parses.
"""

from __future__ import annotations

from typing import Any

from patchkit import errors


class APIError(Exception):
    """An error the server answers with, instead of a completion."""

    def __init__(self, status: int, message: str, *, type_: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad_request(message: str, *, param: str | None = None, code: str = "invalid_value") -> APIError:
    return APIError(400, message, code=code, param=param)


def too_large(message: str, *, param: str | None = None) -> APIError:
    return APIError(413, message, code="too_large", param=param)


def unauthorized() -> APIError:
    return APIError(401, "missing or wrong API key: send 'Authorization: Bearer $PATCHKIT_API_KEY'",
                    type_="authentication_error", code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})


def queue_full(limit: int) -> APIError:
    return APIError(429, f"the server is at capacity ({limit} requests running or queued); retry shortly",
                    type_="rate_limit_error", code="queue_full", headers={"Retry-After": "1"})


def draining() -> APIError:
    return APIError(503, "the server is shutting down and takes no new requests; retry on another replica",
                    type_="server_error", code="draining", headers={"Retry-After": "5"})


def unknown_model(model: str, served: str) -> APIError:
    return APIError(404, f"unknown model {model!r}: use {served!r}, {served + '+NS/NAME@SPEC'!r} or an alias (GET /v1/models)",
                    code="model_not_found", param="model")


# status, type, code for each patchkit error class (the first match wins: subclasses first).
_PATCH_ERRORS: tuple[tuple[type[errors.PatchkitError], int, str, str], ...] = (
    (errors.NotFoundError, 404, "invalid_request_error", "model_not_found"),
    (errors.TrustError, 403, "permission_error", "patch_untrusted"),
    (errors.IntegrityError, 403, "permission_error", "patch_integrity_failed"),
    (errors.CompatibilityError, 400, "invalid_request_error", "patch_incompatible"),
    (errors.InvalidInputError, 400, "invalid_request_error", "invalid_patch"),
    (errors.UsageError, 400, "invalid_request_error", "invalid_value"),
    (errors.RegistryError, 502, "server_error", "registry_unavailable"),
    (errors.PolicyError, 403, "permission_error", "patch_policy"),
)


def from_patchkit(exc: errors.PatchkitError, *, param: str | None = "model") -> APIError:
    """A refused patch (or any patchkit error) as the client should see it."""
    for cls, status, type_, code in _PATCH_ERRORS:
        if isinstance(exc, cls):
            return APIError(status, exc.one_line(), type_=type_, code=code, param=param)
    return APIError(500, exc.one_line(), type_="server_error", code="internal_error")
