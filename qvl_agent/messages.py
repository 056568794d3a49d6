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
    """

    name: str
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    name_for_human: str | None = None


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
