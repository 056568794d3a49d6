"""Tools the model can call: a name, a description, JSON-Schema parameters and a (sync or async) callable.

Arguments are validated with ``jsonschema`` before the call. Nothing a model can write makes :meth:`Tool.run`
raise: invalid JSON, schema violations, exceptions inside the tool and timeouts all come back as a
:class:`ToolResult` with ``is_error=True`` and a message the model can read and act on.

A tool may return text, anything JSON-serialisable, a PIL image (or a list mixing text and images), or a
:class:`ToolResult`. Returned images enter the conversation as new pictures.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, get_type_hints

import jsonschema
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, create_model

from qvl_agent.messages import FunctionSpec

_EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}
_TOOL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")


class ToolResult(BaseModel):
    """What a tool call produced: text for the model, images (new pictures), raw data, and whether it failed."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    content: str = ""
    images: list[Image.Image] = Field(default_factory=list, exclude=True, repr=False)
    data: Any = None
    is_error: bool = False

    @classmethod
    def error(cls, message: str) -> ToolResult:
        return cls(content=message, is_error=True)


@dataclass
class Tool:
    """A callable the model may use.

    :param name: the name the model writes after ``Action:`` (letters, digits, ``_``, ``-``, ``.``).
    :param description: what the tool is for, shown to the model.
    :param parameters: a JSON Schema (``{"type": "object", "properties": {...}, "required": [...]}``).
    :param func: called with the validated arguments as keyword arguments; may be ``async``.
    :param timeout: seconds before the call is abandoned (None: no limit).
    """

    name: str
    description: str
    parameters: dict[str, Any]
    func: Callable[..., Any]
    timeout: float | None = 30
    #: a pydantic model the arguments are converted through before the call (set by the constructors)
    model: type[BaseModel] | None = field(default=None, repr=False)
    #: call ``func(model_instance)`` instead of ``func(**arguments)``
    pass_model: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _TOOL_NAME.match(self.name):
            raise ValueError(
                f"invalid tool name {self.name!r}: use letters, digits, '_', '-' or '.', starting with a letter"
            )
        if not callable(self.func):
            raise TypeError(f"tool {self.name!r}: func must be callable, got {type(self.func).__name__}")
        if not isinstance(self.parameters, dict):
            raise TypeError(f"tool {self.name!r}: parameters must be a JSON Schema dict")
        try:
            jsonschema.validators.validator_for(self.parameters).check_schema(self.parameters)
        except jsonschema.SchemaError as exc:
            raise ValueError(
                f"tool {self.name!r}: parameters are not a valid JSON Schema: {exc.message}"
            ) from None

    # -- constructors ---------------------------------------------------------------------------------

    @classmethod
    def from_function(
        cls,
        fn: Callable[..., Any],
        name: str | None = None,
        description: str | None = None,
        timeout: float | None = 30,
    ) -> Tool:
        """Build a tool from a typed function: the schema comes from its type hints and defaults, the
        description and per-parameter descriptions from its docstring (``:param x:`` or ``Args:`` style)."""
        summary, param_docs = _parse_docstring(inspect.getdoc(fn) or "")
        hints = get_type_hints(fn)
        fields: dict[str, Any] = {}
        for param in inspect.signature(fn).parameters.values():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                continue
            annotation = hints.get(param.name, Any)
            default = ... if param.default is param.empty else param.default
            fields[param.name] = (annotation, Field(default, description=param_docs.get(param.name)))
        tool_name = name or fn.__name__
        model = create_model(f"{tool_name}_arguments", **fields)
        return cls(
            name=tool_name,
            description=description if description is not None else summary,
            parameters=_clean_schema(model.model_json_schema()),
            func=fn,
            timeout=timeout,
            model=model,
        )

    @classmethod
    def from_model(
        cls,
        name: str,
        description: str,
        model: type[BaseModel],
        fn: Callable[..., Any],
        timeout: float | None = 30,
    ) -> Tool:
        """Build a tool whose arguments are a pydantic model; ``fn`` receives the validated model instance."""
        return cls(
            name=name,
            description=description,
            parameters=_clean_schema(model.model_json_schema()),
            func=fn,
            timeout=timeout,
            model=model,
            pass_model=True,
        )

    # -- use ------------------------------------------------------------------------------------------

    def spec(self) -> FunctionSpec:
        """How the tool is shown to the model."""
        return FunctionSpec(name=self.name, description=self.description, parameters=self.parameters)

    def prepare(self, arguments: str | dict[str, Any] | None) -> dict[str, Any] | ToolResult:
        """Parse and validate arguments; returns the argument dict or an error :class:`ToolResult`."""
        if arguments is None:
            arguments = {}
        if isinstance(arguments, str):
            parsed = self._parse_arguments(arguments)
            if isinstance(parsed, ToolResult):
                return parsed
            arguments = parsed
        if not isinstance(arguments, dict):
            return ToolResult.error(
                f"Error: the input of {self.name} must be a JSON object, got {type(arguments).__name__}. "
                f"Expected parameters: {json.dumps(self.parameters, ensure_ascii=False)}"
            )
        validator = jsonschema.validators.validator_for(self.parameters)(self.parameters)
        problems = sorted(validator.iter_errors(arguments), key=lambda e: list(e.absolute_path))
        if problems:
            lines = []
            for problem in problems:
                where = "/".join(str(p) for p in problem.absolute_path)
                lines.append(f"- {where + ': ' if where else ''}{problem.message}")
            return ToolResult.error(
                f"Error: invalid arguments for {self.name}:\n"
                + "\n".join(lines)
                + f"\nExpected parameters: {json.dumps(self.parameters, ensure_ascii=False)}"
            )
        return arguments

    def run(self, arguments: str | dict[str, Any] | None = None) -> ToolResult:
        """Validate ``arguments`` (a JSON string or a dict) and call the tool. Never raises."""
        prepared = self.prepare(arguments)
        if isinstance(prepared, ToolResult):
            return prepared
        try:
            call = self._bind(prepared)
        except Exception as exc:  # pydantic conversion failed after schema validation
            return ToolResult.error(f"Error: invalid arguments for {self.name}: {exc}")
        if self.timeout is None and not inspect.iscoroutinefunction(self.func):
            return self._outcome(call)
        return self._run_in_thread(call)

    async def arun(self, arguments: str | dict[str, Any] | None = None) -> ToolResult:
        """Async version of :meth:`run`; sync tools run in a worker thread. Never raises."""
        prepared = self.prepare(arguments)
        if isinstance(prepared, ToolResult):
            return prepared
        try:
            call = self._bind(prepared)
        except Exception as exc:
            return ToolResult.error(f"Error: invalid arguments for {self.name}: {exc}")
        if inspect.iscoroutinefunction(self.func):
            try:
                value = await asyncio.wait_for(call(), self.timeout)
            except asyncio.TimeoutError:
                return self._timeout_result()
            except Exception as exc:
                return self._exception_result(exc)
            return to_tool_result(value)
        return await asyncio.to_thread(self.run, prepared)

    # -- internals ------------------------------------------------------------------------------------

    def _parse_arguments(self, text: str) -> dict[str, Any] | ToolResult:
        text = text.strip()
        if not text:
            return {}
        # models often wrap the JSON in a code fence
        fenced = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", text, flags=re.DOTALL)
        if fenced:
            text = fenced.group(1)
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            # a bare string for a tool with a single string parameter: `Action Input: a cat`
            props = self.parameters.get("properties") or {}
            if len(props) == 1:
                ((only, schema),) = props.items()
                if isinstance(schema, dict) and schema.get("type") == "string":
                    return {only: text}
            return ToolResult.error(
                f"Error: the input of {self.name} is not valid JSON ({exc.msg} at position {exc.pos}). "
                f"Write Action Input as a JSON object with parameters: "
                f"{json.dumps(self.parameters, ensure_ascii=False)}"
            )

    def _bind(self, arguments: dict[str, Any]) -> Callable[[], Any]:
        if self.model is None:
            return lambda: self.func(**arguments)
        instance = self.model.model_validate(arguments)
        if self.pass_model:
            return lambda: self.func(instance)
        values = {name: getattr(instance, name) for name in arguments}
        return lambda: self.func(**values)

    def _outcome(self, call: Callable[[], Any]) -> ToolResult:
        try:
            value = call()
            if inspect.isawaitable(value):
                value = asyncio.run(_await(value))
        except Exception as exc:
            return self._exception_result(exc)
        return to_tool_result(value)

    def _run_in_thread(self, call: Callable[[], Any]) -> ToolResult:
        # A daemon thread per call: a tool that never returns cannot block the caller or a shared pool.
        box: list[ToolResult] = []
        worker = threading.Thread(target=lambda: box.append(self._outcome(call)), daemon=True)
        worker.start()
        worker.join(self.timeout)
        if worker.is_alive() or not box:
            return self._timeout_result()
        return box[0]

    def _timeout_result(self) -> ToolResult:
        return ToolResult.error(f"Error: {self.name} did not finish within {self.timeout} seconds.")

    def _exception_result(self, exc: BaseException) -> ToolResult:
        return ToolResult.error(f"Error: {self.name} failed: {type(exc).__name__}: {exc}")


async def _await(value: Any) -> Any:
    return await value


def to_tool_result(value: Any) -> ToolResult:
    """Convert whatever a tool returned into a :class:`ToolResult`."""
    if isinstance(value, ToolResult):
        return value
    if value is None:
        return ToolResult(content="")
    if isinstance(value, str):
        return ToolResult(content=value)
    if isinstance(value, Image.Image):
        return ToolResult(content=_describe_image(value), images=[value])
    if isinstance(value, (list, tuple)) and any(isinstance(v, Image.Image) for v in value):
        texts, images = [], []
        for item in value:
            if isinstance(item, Image.Image):
                images.append(item)
                texts.append(_describe_image(item))
            else:
                texts.append(item if isinstance(item, str) else _to_json(item))
        return ToolResult(content="\n".join(texts), images=images)
    if isinstance(value, BaseModel):
        return ToolResult(content=value.model_dump_json(), data=value)
    return ToolResult(content=_to_json(value), data=value)


def _describe_image(image: Image.Image) -> str:
    return f"[image {image.width}x{image.height}]"


def _to_json(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


def _clean_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Drop pydantic's auto-generated ``title`` keys (noise in a prompt) but keep everything else."""

    def walk(node: Any, in_properties: bool = False) -> Any:
        if isinstance(node, dict):
            return {
                key: walk(value, key in ("properties", "$defs", "definitions") and not in_properties)
                for key, value in node.items()
                if in_properties or key != "title"
            }
        if isinstance(node, list):
            return [walk(item) for item in node]
        return node

    cleaned = walk(schema)
    cleaned.setdefault("type", "object")
    cleaned.setdefault("properties", {})
    return cleaned


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """Summary paragraph and parameter descriptions from a reST (``:param x:``) or Google (``Args:``) docstring."""
    params: dict[str, str] = {}
    summary_lines: list[str] = []
    in_args = False
    for line in doc.splitlines():
        stripped = line.strip()
        rest = re.match(r":param\s+(?:[^:]+\s)?(\w+):\s*(.*)", stripped)
        if rest:
            params[rest.group(1)] = rest.group(2)
            in_args = False
            continue
        if stripped in ("Args:", "Arguments:", "Parameters:"):
            in_args = True
            continue
        if in_args:
            google = re.match(r"(\w+)\s*(?:\([^)]*\))?:\s*(.*)", stripped)
            if google and line.startswith((" ", "\t")):
                params[google.group(1)] = google.group(2)
                continue
            if not stripped or not line.startswith((" ", "\t")):
                in_args = False
        if stripped.startswith(":") or in_args:
            continue
        summary_lines.append(stripped)
    paragraphs = [p.strip() for p in "\n".join(summary_lines).split("\n\n") if p.strip()]
    summary = " ".join(paragraphs[0].split()) if paragraphs else ""
    return summary, params


def as_tool(obj: Tool | Callable[..., Any]) -> Tool:
    """A :class:`Tool` as is, or a plain function wrapped with :meth:`Tool.from_function`."""
    if isinstance(obj, Tool):
        return obj
    if callable(obj):
        return Tool.from_function(obj)
    raise TypeError(f"expected a Tool or a function, got {type(obj).__name__}")
