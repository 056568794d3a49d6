"""Pydantic models of the OpenAI-compatible API: chat completion requests, responses, stream chunks.

The request models accept what the official ``openai`` client sends (and the function definitions of the
original Qwen-VL ``openai_api.py``: ``name_for_model`` / ``name_for_human`` / ``description_for_model``).
Unknown request fields are ignored; known fields whose values the server cannot honour are rejected in
:func:`ChatCompletionRequest.unsupported` so that the client gets a 400 instead of a silent surprise.

Two extensions are documented in ``docs/server.md``:

* ``message.boxes`` on assistant replies: grounding boxes parsed from ``<ref>…</ref><box>…</box>``.
* ``agent`` on requests: run installed plugin tools server-side; the reply carries ``message.agent_trace``.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any, Literal

import jsonschema
from pydantic import BaseModel, ConfigDict, Field, model_validator

from qvl_agent.messages import Box

# --------------------------------------------------------------------------------------------- requests


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ImageURL(_Lenient):
    """``image_url`` of a content part: an http(s) URL, a ``data:`` URL or (opt-in) a local file."""

    url: str
    detail: Literal["auto", "low", "high"] | None = None


class TextContent(_Lenient):
    type: Literal["text"]
    text: str


class ImageContent(_Lenient):
    type: Literal["image_url"]
    image_url: ImageURL | str

    def url(self) -> str:
        return self.image_url if isinstance(self.image_url, str) else self.image_url.url


class FunctionCallIn(_Lenient):
    name: str
    arguments: str = "{}"


class ToolCallIn(_Lenient):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCallIn


class ChatMessageIn(_Lenient):
    """One request message. ``developer`` is accepted as a synonym of ``system``."""

    role: Literal["system", "developer", "user", "assistant", "function", "tool"]
    content: str | list[TextContent | ImageContent] | None = None
    name: str | None = None
    function_call: FunctionCallIn | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None


_FUNCTION_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


class FunctionDefinition(_Lenient):
    """A callable function, in OpenAI's shape or in the original Qwen-VL server's shape.

    ``parameters`` is a JSON Schema (OpenAI) or, for the original shape, also a list of parameter records.
    """

    name: str | None = None
    description: str | None = None
    parameters: dict[str, Any] | list[Any] | None = None
    strict: bool | None = None
    name_for_model: str | None = None
    name_for_human: str | None = None
    description_for_model: str | None = None

    @model_validator(mode="after")
    def _needs_a_name(self) -> FunctionDefinition:
        if not (self.name or self.name_for_model):
            raise ValueError("a function needs 'name' (or 'name_for_model')")
        # OpenAI's rule for function names: the model writes the name back verbatim in "Action: <name>"
        if not _FUNCTION_NAME.fullmatch(self.model_name):
            raise ValueError(
                f"function name {self.model_name!r} must be 1-64 letters, digits, underscores or dashes"
            )
        if isinstance(self.parameters, dict):
            try:
                jsonschema.validators.validator_for(self.parameters).check_schema(self.parameters)
            except jsonschema.SchemaError as exc:
                raise ValueError(
                    f"parameters of {self.model_name!r} is not a valid JSON Schema: {exc.message}"
                ) from None
        return self

    @property
    def model_name(self) -> str:
        return self.name_for_model or self.name or ""


class ToolDefinition(_Lenient):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(_Lenient):
    name: str


class NamedToolChoice(_Lenient):
    type: Literal["function"] = "function"
    function: NamedFunction


class StreamOptions(_Lenient):
    include_usage: bool = False


class AgentOptions(_Lenient):
    """Server-side agent mode (extension): run these installed tools in the agent loop."""

    tools: list[str] = Field(min_length=1)
    max_steps: int = Field(default=5, ge=1, le=50)


class ChatCompletionRequest(_Lenient):
    """``POST /v1/chat/completions`` body."""

    model: str
    messages: list[ChatMessageIn] = Field(min_length=1)
    functions: list[FunctionDefinition] | None = None
    function_call: Literal["auto", "none"] | NamedFunction | None = None
    tools: list[ToolDefinition] | None = None
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int | None = None
    user: str | None = None
    # accepted only at values that change nothing (see ``unsupported``)
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    logit_bias: dict[str, float] | None = None
    response_format: dict[str, Any] | None = None
    # extension
    agent: AgentOptions | None = None

    def unsupported(self) -> tuple[str, str] | None:
        """``(param, message)`` for the first field set to a value this server cannot honour, else None."""
        if self.n not in (None, 1):
            return "n", f"n={self.n} is not supported: this server returns exactly one choice (n=1)"
        if self.presence_penalty not in (None, 0, 0.0):
            return "presence_penalty", "presence_penalty is not supported (only 0)"
        if self.frequency_penalty not in (None, 0, 0.0):
            return "frequency_penalty", "frequency_penalty is not supported (only 0)"
        if self.logprobs:
            return "logprobs", "logprobs are not supported"
        if self.top_logprobs:
            return "top_logprobs", "top_logprobs are not supported"
        if self.logit_bias:
            return "logit_bias", "logit_bias is not supported"
        if self.response_format and self.response_format.get("type") not in (None, "text"):
            return "response_format", "only response_format {'type': 'text'} is supported"
        if self.stream_options is not None and not self.stream:
            return "stream_options", "stream_options is only allowed when stream is true"
        if self.functions and self.tools:
            return "tools", "send either 'functions' (legacy) or 'tools', not both"
        if self.function_call is not None and not self.functions and self.function_call != "none":
            return "function_call", "'function_call' needs 'functions'"
        if self.tool_choice is not None and not self.tools and self.tool_choice != "none":
            return "tool_choice", "'tool_choice' needs 'tools'"
        stops = [self.stop] if isinstance(self.stop, str) else (self.stop or [])
        if len(stops) > 4:
            return "stop", "at most 4 stop sequences are allowed"
        if any(not s for s in stops):
            return "stop", "stop sequences must be non-empty strings"
        if self.agent is not None and (self.functions or self.tools):
            return "agent", "agent mode runs server-side tools; do not also send 'functions' or 'tools'"
        return None

    @property
    def stop_list(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    @property
    def max_new_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


# -------------------------------------------------------------------------------------------- responses


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def tool_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


class FunctionCallOut(BaseModel):
    name: str
    arguments: str


class ToolCallOut(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCallOut


class AgentStep(BaseModel):
    """One tool call made by the server-side agent (extension)."""

    thought: str | None = None
    tool: str
    arguments: str
    observation: str
    is_error: bool = False


class ResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    refusal: str | None = None
    function_call: FunctionCallOut | None = None
    tool_calls: list[ToolCallOut] | None = None
    # extensions
    boxes: list[Box] | None = None
    agent_trace: list[AgentStep] | None = None


class Choice(BaseModel):
    index: int = 0
    message: ResponseMessage
    finish_reason: Literal["stop", "length", "function_call", "tool_calls"]
    logprobs: None = None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int) -> Usage:
        return cls(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        )


class ChatCompletion(BaseModel):
    id: str = Field(default_factory=completion_id)
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=now)
    model: str
    choices: list[Choice]
    usage: Usage
    system_fingerprint: str | None = None


class FunctionCallDelta(BaseModel):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(BaseModel):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionCallDelta


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    function_call: FunctionCallDelta | None = None
    tool_calls: list[ToolCallDelta] | None = None
    # extensions (sent on the last chunk of a choice)
    boxes: list[Box] | None = None
    agent_trace: list[AgentStep] | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: Literal["stop", "length", "function_call", "tool_calls"] | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=now)
    owned_by: str = "qvl_agent"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    model: str
    active: int
    waiting: int
    max_concurrency: int
    max_queue: int
