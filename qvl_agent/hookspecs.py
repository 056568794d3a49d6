"""Every hook a qvl_agent plugin can implement (pluggy project ``"qvl_agent"``).

A plugin is a module (or object) with functions decorated by :data:`hookimpl` whose names match the specs
below; a plugin only implements the hooks it needs and may accept a subset of each hook's arguments. Built-in
features (the ReAct protocol, image fetchers, grounding, formatters, the demo model) are plugins in
``qvl_agent/plugins/`` using exactly these hooks. See ``docs/plugins.md`` for the reference with examples.

Registration hooks (``register_tools``, ``register_models``, ``function_call_protocols``) are called on demand,
one plugin at a time, so a plugin that raises there is reported and skipped without affecting the others.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from PIL import Image

    from qvl_agent.messages import AgentResponse, ImageLimits, ResponseContext
    from qvl_agent.protocols import FunctionCallProtocol
    from qvl_agent.tools import Tool

PROJECT_NAME = "qvl_agent"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def register_tools(register: Callable[[Tool], None]) -> None:
    """Add tools the model can call.

    Call ``register(tool)`` once per :class:`~qvl_agent.tools.Tool`. A tool registered later under the same
    name replaces an earlier one (plugins load after the built-ins, so they can override them).

    :param register: callback taking a :class:`~qvl_agent.tools.Tool`.
    :return: nothing; return values are ignored.

    Example::

        @hookimpl
        def register_tools(register):
            def word_count(text: str) -> int:
                \"\"\"Count the words in a text.\"\"\"
                return len(text.split())

            register(Tool.from_function(word_count))
    """


@hookspec
def register_models(register: Callable[..., None]) -> None:
    """Add model backends.

    Call ``register(name, factory, matches=None)``: ``factory(spec)`` builds a
    :class:`~qvl_agent.backends.ModelBackend` for a model spec (``"demo"``, a checkpoint path,
    ``"openai+http://host:port/v1"`` ...). A spec is resolved by the registration whose ``name`` equals it,
    otherwise by the first whose ``matches(spec)`` returns True (later plugins are asked first).
    A factory for a model that runs in this process may take the keyword options ``device`` (``"auto"``,
    ``"cpu"``, ``"cuda"`` …) and ``dtype`` (``"fp32"``, ``"bf16"``, ``"fp16"``) that ``--device`` / ``--dtype``
    of ``serve``, ``console``, ``chat`` and ``eval`` pass on; they are only passed when given.

    :param register: callback ``register(name: str, factory: Callable[..., ModelBackend],
        matches: Callable[[str], bool] | None = None)``.
    :return: nothing; return values are ignored.

    Example::

        @hookimpl
        def register_models(register):
            register(
                "remote",
                factory=lambda spec: OpenAIBackend(spec.removeprefix("openai+")),
                matches=lambda spec: spec.startswith("openai+"),
            )
    """


@hookspec(firstresult=True)
def fetch_image(source: str | bytes | Image.Image, limits: ImageLimits) -> Image.Image | None:
    """Turn an image source into an RGB PIL image (first non-None result wins).

    Return None when the source is not one this plugin handles, so the next plugin is asked. Raise
    :class:`~qvl_agent.model.errors.ImageLoadError` when it is yours but cannot be loaded (too large, wrong
    type, unreachable, corrupt, forbidden path): that stops the search with a clear error.

    :param source: a local path, ``file://``, ``http(s)://`` or ``data:`` URL, raw bytes, or a PIL image.
    :param limits: :class:`~qvl_agent.messages.ImageLimits` to honour (size caps, timeout, allowed folders).
    :return: an RGB :class:`PIL.Image.Image`, or None.

    Example::

        @hookimpl
        def fetch_image(source, limits):
            if isinstance(source, str) and source.startswith("s3://"):
                data = my_s3_get(source, max_bytes=limits.max_bytes)
                return Image.open(io.BytesIO(data)).convert("RGB")
            return None
    """


@hookspec
def function_call_protocols() -> list[FunctionCallProtocol]:
    """Provide function-calling protocols: how tools are shown to the model and how replies are parsed.

    Each :class:`~qvl_agent.protocols.FunctionCallProtocol` has a unique ``name`` (``Agent(protocol=name)``).
    The built-in ``"react"`` protocol is the original Qwen-VL ``openai_api.py`` format.

    :return: a list of protocol instances (may be empty).

    Example::

        @hookimpl
        def function_call_protocols():
            return [JsonToolProtocol()]
    """


@hookspec
def postprocess_response(response: AgentResponse, context: ResponseContext) -> None:
    """Enrich a final answer before it is formatted, e.g. parse grounding boxes into ``response.boxes``.

    Every implementation is called (later-registered plugins first); modify ``response`` in place.
    ``response.images`` holds the conversation's pictures in order.

    :param response: the :class:`~qvl_agent.messages.AgentResponse` (text, boxes, images, steps, extra).
    :param context: :class:`~qvl_agent.messages.ResponseContext` (messages, pinned image index, options).
    :return: nothing; return values are ignored.

    Example::

        @hookimpl
        def postprocess_response(response, context):
            response.extra["word_count"] = len(response.text.split())
    """


@hookspec(firstresult=True)
def format_output(response: AgentResponse, fmt: str) -> Any:
    """Render a response in a named format (first non-None result wins).

    Built-in formats: ``"text"`` (grounding tags stripped), ``"markdown"``, ``"json"`` (strings) and
    ``"image"`` (a PIL image of the latest picture with boxes and labels drawn). Return None for formats
    you do not handle.

    :param response: the :class:`~qvl_agent.messages.AgentResponse` to render.
    :param fmt: the format name.
    :return: the rendered output (``str``, ``bytes`` or a PIL image), or None.

    Example::

        @hookimpl
        def format_output(response, fmt):
            if fmt == "html":
                return f"<p>{html.escape(response.text)}</p>"
            return None
    """
