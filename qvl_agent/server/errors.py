"""OpenAI-shaped errors: ``{"error": {"message", "type", "param", "code"}}`` with a fitting HTTP status.

Every failure the server can name becomes an :class:`APIError`; the handlers installed by
:func:`install_error_handlers` turn request-validation errors (FastAPI's 422) into 400, unknown routes into
404, and anything unexpected into a 500 that still has the OpenAI body (bad input never lands there: it is
caught as :class:`~qvl_agent.model.errors.InputError` / ``ValueError`` first and answered with 400).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from qvl_agent.model.errors import ContextLengthError, InputError

log = logging.getLogger("qvl_agent.server")

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    502: "server_error",
    500: "server_error",
    503: "server_error",
}


class APIError(Exception):
    """An error answered with an OpenAI error body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        self.headers = headers

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def from_exception(exc: BaseException) -> APIError:
    """Map an exception raised while serving a request to the error the client should see."""
    if isinstance(exc, APIError):
        return exc
    from qvl_agent.upstream import UpstreamError

    if isinstance(exc, UpstreamError):
        return APIError(502, str(exc), code="upstream_error", type="server_error")
    if isinstance(exc, ContextLengthError):
        return APIError(400, str(exc), param="messages", code="context_length_exceeded")
    if isinstance(exc, (InputError, ValueError)):
        return APIError(400, str(exc) or type(exc).__name__, param="messages")
    log.exception("internal error while serving a request", exc_info=exc)
    return APIError(500, f"internal server error: {type(exc).__name__}: {exc}")


def _param_of(loc: tuple[Any, ...]) -> str | None:
    parts = [str(p) for p in loc if p != "body"]
    if not parts:
        return None
    out = parts[0]
    for p in parts[1:]:
        out += f"[{p}]" if p.isdigit() else f".{p}"
    return out


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error with the OpenAI error body."""

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        param = _param_of(tuple(first.get("loc", ())))
        if first.get("type") == "json_invalid":
            param = None  # the location is a character offset, not a field
            message = (
                f"the request body is not valid JSON: {first.get('ctx', {}).get('error', first.get('msg'))}"
            )
        elif param is None and first.get("type") in ("model_attributes_type", "dict_type", "missing"):
            message = "the request body must be a JSON object (send Content-Type: application/json)"
        elif first:
            message = f"invalid value for '{param}': {first.get('msg')}" if param else str(first.get("msg"))
            if len(errors) > 1:
                message += f" (and {len(errors) - 1} more problem(s))"
        else:
            message = "invalid request"
        return APIError(400, message, param=param, code="invalid_value").response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404:
            message = f"unknown URL {request.method} {request.url.path}"
        return APIError(exc.status_code, message, headers=getattr(exc, "headers", None)).response()

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return from_exception(exc).response()
