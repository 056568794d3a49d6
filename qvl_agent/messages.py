"""Pydantic types shared by every layer: chat messages, content parts, tool calls, boxes, generation I/O.

These types are the contract between the protocol plugins, the agent loop, the model backends, the server
and the console. They never import torch or the model code.
"""

from __future__ import annotations

from typing import Any, Literal

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

Role = Literal["system", "user", "assistant", "function", "tool"]


class TextPart(BaseModel):
    """A piece of text inside a message's content."""

    type: Literal["text"] = "text"
    text: str


class ImagePart(BaseModel):
    """A picture inside a message's content.

    ``url`` is where it came from (path, ``file://``, ``http(s)://`` or ``data:`` URL); ``image`` holds the
    decoded RGB picture once a ``fetch_image`` hook has resolved it (or when a script passes one directly).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    type: Literal["image"] = "image"
    url: str | None = None
    image: Image.Image | None = Field(default=None, exclude=True, repr=False)
    detail: str | None = None


ContentPart = TextPart | ImagePart


class FunctionCall(BaseModel):
    """A call the model asked for: the tool name and its arguments as a JSON string (OpenAI's shape)."""

    name: str
    arguments: str = "{}"


class ToolCall(BaseModel):
    """A ``tools``-style call: an id plus the function call."""

    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(BaseModel):
    """One chat message, OpenAI-shaped. ``content`` is a string or a list of parts."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    role: Role
    content: str | list[ContentPart] | None = None
    name: str | None = None
    function_call: FunctionCall | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    def text(self) -> str:
        """The message's text with image parts left out."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content if isinstance(p, TextPart))

    def images(self) -> list[ImagePart]:
        """The image parts of the message, in order."""
        if not isinstance(self.content, list):
            return []
        return [p for p in self.content if isinstance(p, ImagePart)]


class FunctionSpec(BaseModel):
    """A function (tool) the model may call, as shown to it: name, description, JSON-Schema parameters.

    ``name_for_human`` is the display name used by the original Qwen-VL server's prompt (defaults to ``name``).
    ``parameters`` is a JSON Schema; the original Qwen-VL list form (``[{"name", "description", "required",
    "schema"}, ...]``) is also kept as given, so prompts render exactly as the original server's did.
    """

    name: str
    description: str = ""
    parameters: dict[str, Any] | list[dict[str, Any]] = Field(
        default_factory=lambda: {"type": "object", "properties": {}}
    )
    name_for_human: str | None = None

    @classmethod
    def from_any(cls, spec: dict[str, Any] | FunctionSpec) -> FunctionSpec:
        """Accept a function definition in OpenAI's shape (``name``/``description``/``parameters``), the
        ``tools`` shape (``{"type": "function", "function": {...}}``) or the original Qwen-VL shape
        (``name_for_model``/``name_for_human``/``description_for_model``/``parameters``)."""
        if isinstance(spec, FunctionSpec):
            return spec
        if not isinstance(spec, dict):
            raise TypeError(f"a function definition must be a dict, got {type(spec).__name__}")
        if spec.get("type") == "function" and isinstance(spec.get("function"), dict):
            spec = spec["function"]
        name = spec.get("name_for_model") or spec.get("name")
        if not name or not isinstance(name, str):
            raise ValueError(
                f"function definition has no name (expected 'name' or 'name_for_model'): {spec!r}"
            )
        description = spec.get("description_for_model", spec.get("description", "")) or ""
        parameters = spec.get("parameters")
        if parameters is None:
            parameters = {"type": "object", "properties": {}}
        return cls(
            name=name,
            description=description,
            parameters=parameters,
            name_for_human=spec.get("name_for_human"),
        )

    def json_schema(self) -> dict[str, Any]:
        """The parameters as a JSON Schema object (the Qwen-VL list form is converted)."""
        if isinstance(self.parameters, dict):
            return self.parameters
        properties: dict[str, Any] = {}
        required: list[str] = []
        for param in self.parameters:
            name = param.get("name")
            if not name:
                continue
            schema = dict(param.get("schema") or {})
            if param.get("description") and "description" not in schema:
                schema["description"] = param["description"]
            properties[name] = schema
            if param.get("required"):
                required.append(name)
        return {"type": "object", "properties": properties, "required": required}


class Box(BaseModel):
    """A grounded region parsed from ``<ref>label</ref><box>(x1,y1),(x2,y2)</box>``.

    ``norm`` holds the coordinates as written by the model, normalised to [0, 1000). ``pixels`` holds them on
    the picture they refer to (``image_index``, 0-based over the conversation's pictures), when known.
    ``quad`` is True for a ``<quad>`` (four points flattened into ``norm`` as x1,y1,...,x4,y4).
    """

    label: str | None = None
    norm: list[int]
    pixels: list[float] | None = None
    image_index: int | None = None
    quad: bool = False


class GenerationRequest(BaseModel):
    """What a model backend is asked to continue: a ChatML conversation, pictures and sampling settings.

    ``images`` are matched, in order, to the ``<img>…</img>`` spans found in ``history`` then ``query``;
    the text inside a span is only a reference (a short name), so any image source works.
    ``query=None`` asks to continue the last history turn's assistant text (completion mode).
    ``image_limits``, when set, is the policy for any other ``<img>PATH-or-URL</img>`` written in the text
    itself (the original Qwen-VL way of attaching pictures): such references are loaded through the
    ``fetch_image`` plugins under these limits. A server sets it, so that text cannot reach files or hosts
    its image settings forbid; None keeps the original behaviour (the model loads the reference itself).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    system: str = "You are a helpful assistant."
    history: list[tuple[str, str]] = Field(default_factory=list)
    query: str | None = ""
    images: list[Image.Image] = Field(default_factory=list, exclude=True, repr=False)
    stop: list[str] = Field(default_factory=list)
    max_new_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    image_limits: ImageLimits | None = Field(default=None, exclude=True, repr=False)


class GenerationResult(BaseModel):
    """A backend's answer: the generated text (stop words removed) and why it ended."""

    text: str
    finish_reason: Literal["stop", "length"] = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0


class ParsedReply(BaseModel):
    """A protocol's reading of model output: plain content, or a function call with the model's thought."""

    content: str | None = None
    function_call: FunctionCall | None = None
    thought: str | None = None


class ImageLimits(BaseModel):
    """What an image fetcher may do: size caps, network timeout, and which local folders it may read.

    ``allowed_dirs=None`` allows any local path (the library default, for scripts); a server sets it to the
    folders it is willing to expose. An empty list forbids local files altogether.
    """

    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 64_000_000
    timeout: float = 10.0
    allowed_dirs: list[str] | None = None
    allow_local: bool = True
    allow_http: bool = True
    allow_data: bool = True


class AgentStep(BaseModel):
    """One tool call in an agent run: the model's thought, the call, and what the tool answered."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    thought: str | None = None
    tool: str | None = None
    arguments: str | None = None
    observation: str | None = None
    is_error: bool = False
    images: list[Image.Image] = Field(default_factory=list, exclude=True, repr=False)


class AgentResponse(BaseModel):
    """A final answer as the user sees it: text, structured boxes, pictures and the tool-call trace.

    ``text`` is the model's answer as generated (grounding tags included). ``images`` are the conversation's
    pictures in order (``Box.image_index`` points into it). ``postprocess_response`` hooks fill ``boxes`` and
    may add entries to ``extra``; ``format_output`` hooks render it.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    text: str = ""
    boxes: list[Box] = Field(default_factory=list)
    images: list[Image.Image] = Field(default_factory=list, exclude=True, repr=False)
    steps: list[AgentStep] = Field(default_factory=list)
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    extra: dict[str, Any] = Field(default_factory=dict)


#: short alias used by plugin authors
Reply = AgentResponse


class ResponseContext(BaseModel):
    """What ``postprocess_response`` hooks may consult besides the response itself.

    ``image_index`` pins the picture boxes refer to (default: the latest picture before each box, as the
    original ``_fetch_latest_picture``); ``options`` carries free-form per-request settings for plugins.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    messages: list[Message] = Field(default_factory=list)
    image_index: int | None = None
    options: dict[str, Any] = Field(default_factory=dict)
