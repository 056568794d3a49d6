"""The FastAPI application: OpenAI-compatible routes over one model backend.

``create_app(model)`` takes a :class:`~qvl_agent.backends.ModelBackend` or a model spec resolved by the
``register_models`` plugins (``"demo"``, a checkpoint directory, ``"openai+http://host:port/v1"``)::

    import uvicorn
    from qvl_agent.server import create_app

    uvicorn.run(create_app("demo"), host="127.0.0.1", port=8000)

Routes: ``GET /v1/models``, ``GET /v1/models/{id}``, ``POST /v1/chat/completions``, ``GET /health``, and the
OpenAPI schema at ``/openapi.json`` (docs at ``/docs``).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from sse_starlette.sse import EventSourceResponse

from qvl_agent.backends import ModelBackend
from qvl_agent.messages import ImageLimits
from qvl_agent.protocols import FunctionCallProtocol
from qvl_agent.server import schemas as s
from qvl_agent.server.completions import ChatService
from qvl_agent.server.errors import APIError, install_error_handlers
from qvl_agent.server.limiter import Limiter

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": s.ErrorResponse, "description": text}
    for code, text in {
        400: "invalid request",
        401: "missing or wrong API key",
        404: "unknown model",
        413: "request body too large",
        429: "queue full",
        503: "timed out waiting for a generation slot",
    }.items()
}


def create_app(
    model: ModelBackend | str = "demo",
    *,
    protocol: str | FunctionCallProtocol = "react",
    model_name: str | None = None,
    api_key: str | None = None,
    max_concurrency: int = 1,
    max_queue: int = 16,
    queue_timeout: float | None = 300.0,
    allow_local_images: bool = False,
    image_dirs: list[str] | None = None,
    max_image_bytes: int = 20 * 1024 * 1024,
    max_body_bytes: int = 64 * 1024 * 1024,
    model_options: dict[str, Any] | None = None,
) -> FastAPI:
    """Build the app.

    :param model: a backend, or a model spec for :func:`qvl_agent.plugins.resolve_model`.
    :param protocol: the function-calling protocol (name from the ``function_call_protocols`` plugins).
    :param model_name: the id clients send as ``model`` (default: the backend's name). The spec string is
        accepted too.
    :param api_key: when set, every ``/v1`` request needs ``Authorization: Bearer <api_key>``.
    :param max_concurrency: requests generating at once; more wait in a queue of ``max_queue`` (then 429),
        each for at most ``queue_timeout`` seconds (then 503).
    :param allow_local_images: let clients name local files as images (``image_dirs`` restricts which folders).
    :param max_body_bytes: larger request bodies get a 413.
    :param model_options: keyword options for the model's factory when ``model`` is a spec (``device``,
        ``dtype`` of a local model).
    """
    from qvl_agent import plugins

    backend = (
        model if isinstance(model, ModelBackend) else plugins.resolve_model(model, **(model_options or {}))
    )
    proto = protocol if isinstance(protocol, FunctionCallProtocol) else plugins.get_protocol(protocol)
    names = [model_name or backend.name]
    if isinstance(model, str) and model not in names:
        names.append(model)
    if backend.name not in names:
        names.append(backend.name)
    limits = ImageLimits(
        max_bytes=max_image_bytes,
        allow_local=allow_local_images,
        allowed_dirs=image_dirs if allow_local_images else [],
    )
    limiter = Limiter(max_concurrency=max_concurrency, max_queue=max_queue, queue_timeout=queue_timeout)
    service = ChatService(backend, proto, limiter, limits, names)

    app = FastAPI(
        title="qvl_agent",
        summary="OpenAI-compatible chat completions with function calling, images and grounding for Qwen-VL",
        version=_version(),
    )
    app.state.service = service
    app.state.limiter = limiter
    install_error_handlers(app)

    app.add_middleware(_BodyLimit, max_body_bytes=max_body_bytes)

    async def _auth(request: Request) -> None:
        if api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
            raise APIError(
                401,
                "missing or incorrect API key: send 'Authorization: Bearer <key>'",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )

    @app.get("/health", response_model=s.Health, tags=["server"])
    async def health() -> s.Health:
        """Liveness plus the queue state."""
        return s.Health(
            model=names[0],
            active=limiter.active,
            waiting=limiter.waiting,
            max_concurrency=limiter.max_concurrency,
            max_queue=limiter.max_queue,
        )

    @app.get("/v1/models", response_model=s.ModelList, dependencies=[Depends(_auth)], tags=["openai"])
    async def list_models() -> s.ModelList:
        """The served model (OpenAI list shape)."""
        return s.ModelList(data=[s.ModelCard(id=names[0])])

    @app.get(
        "/v1/models/{model_id:path}",
        response_model=s.ModelCard,
        responses=_ERRORS,
        dependencies=[Depends(_auth)],
        tags=["openai"],
    )
    async def get_model(model_id: str) -> s.ModelCard:
        service.check_model(model_id)
        return s.ModelCard(id=model_id)

    @app.post(
        "/v1/chat/completions",
        response_model=s.ChatCompletion,
        responses={
            **_ERRORS,
            200: {
                "description": "a completion, or with stream=true an SSE stream of chat.completion.chunk",
                "content": {"text/event-stream": {}},
            },
        },
        dependencies=[Depends(_auth)],
        tags=["openai"],
    )
    async def chat_completions(body: s.ChatCompletionRequest, request: Request) -> Any:
        """Chat completion with images, ``functions`` / ``tools`` calling and streaming (OpenAI shapes)."""
        if body.stream:
            events, slot = await service.open_stream(body)
            return _EventStream(events, on_close=slot.close, sep="\n", ping=15)
        answer = await service.complete(body, is_disconnected=request.is_disconnected)
        if answer is None:  # the client went away: its generation was stopped, nobody reads this
            return Response(status_code=499)
        return JSONResponse(answer)

    return app


class _BodyLimit:
    """Answer 413 to a request whose ``Content-Length`` is over the limit. A plain ASGI middleware (not
    ``@app.middleware``, whose wrapped ``receive`` hides client disconnects from the routes)."""

    def __init__(self, app: Any, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            length = headers.get(b"content-length", b"").decode("latin-1")
            if length.isdigit() and int(length) > self.max_body_bytes:
                response = APIError(
                    413,
                    f"request body is {int(length)} bytes; this server accepts at most "
                    f"{self.max_body_bytes} bytes",
                    code="request_too_large",
                ).response()
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _EventStream(EventSourceResponse):
    """An SSE response that runs ``on_close`` however it ends (finished, failed, client gone, or never
    started), so a streamed request can never keep its generation slot."""

    def __init__(self, *args: Any, on_close: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_close = on_close

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("qvl-agent")
    except Exception:
        return "0"
