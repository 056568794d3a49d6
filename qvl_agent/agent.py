"""The agent loop: protocol → model → parse → tool → observation → … → final answer.

A ten-line script::

    from qvl_agent import Agent, Tool

    def add(a: int, b: int) -> int:
        "Add two integers."
        return a + b

    agent = Agent(model="demo", tools=[Tool.from_function(add)])
    result = agent.run("How many shapes are there, plus 2?", images=["scene.png"])
    print(result.text, result.boxes)
    for step in result.steps:
        print(step.tool, step.arguments, step.observation)

``Agent.stream`` yields the same run as events (:class:`TextDelta`, :class:`ToolCallStarted`,
:class:`ToolResultEvent`, :class:`FinalAnswer`) while it happens.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from qvl_agent.backends import ModelBackend
from qvl_agent.messages import (
    AgentResponse,
    FunctionCall,
    FunctionSpec,
    GenerationRequest,
    GenerationResult,
    ImageLimits,
    ImagePart,
    Message,
    ResponseContext,
    TextPart,
)
from qvl_agent.messages import AgentStep as TraceStep
from qvl_agent.protocols import FunctionCallProtocol

ImageInput = str | Path | Image.Image | ImagePart
Prompt = str | Message | Sequence[Message]

#: generation settings ``run``/``stream`` accept as keyword arguments (copied onto the request)
GENERATION_KEYS = ("max_new_tokens", "temperature", "top_p", "top_k", "seed", "stop")


# -- the trace ------------------------------------------------------------------------------------------------


class AgentStep(TraceStep):
    """One model call of a run and, when the model asked for one, the tool call it led to (tool, arguments,
    observation, pictures the tool returned)."""

    index: int = 0
    #: the raw model output of this step
    text: str = ""
    finish_reason: str = "stop"


class AgentResult(AgentResponse):
    """The outcome of :meth:`Agent.run`: an :class:`~qvl_agent.messages.AgentResponse` (final answer, boxes
    filled by the ``postprocess_response`` plugins, pictures, trace) plus the whole conversation."""

    steps: list[AgentStep] = Field(default_factory=list)
    #: the whole conversation, ending with the final assistant message (pass it back to continue chatting)
    messages: list[Message] = Field(default_factory=list)
    #: "answer": the model answered; "max_steps": the step budget ran out
    stopped: Literal["answer", "max_steps"] = "answer"

    @property
    def tool_calls(self) -> list[AgentStep]:
        """The steps that called a tool."""
        return [step for step in self.steps if step.tool is not None]


# -- streaming events -------------------------------------------------------------------------------------------


class StepStarted(BaseModel):
    type: Literal["step_started"] = "step_started"
    step: int


class TextDelta(BaseModel):
    """A piece of the model's raw output for the current step (thoughts and actions included)."""

    type: Literal["text_delta"] = "text_delta"
    step: int
    text: str


class ToolCallStarted(BaseModel):
    type: Literal["tool_call_started"] = "tool_call_started"
    step: int
    tool: str
    arguments: str
    thought: str | None = None


class ToolResultEvent(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    type: Literal["tool_result"] = "tool_result"
    step: int
    tool: str
    content: str
    is_error: bool = False
    images: list[Image.Image] = Field(default_factory=list, exclude=True, repr=False)


class FinalAnswer(BaseModel):
    """The last event of a run; ``result`` is what :meth:`Agent.run` returns."""

    type: Literal["final_answer"] = "final_answer"
    text: str
    result: AgentResult


AgentEvent = StepStarted | TextDelta | ToolCallStarted | ToolResultEvent | FinalAnswer


# -- what a tool may know about the conversation ----------------------------------------------------------------


@dataclasses.dataclass
class ToolContext:
    """The conversation a tool is being called from: its pictures (``images[0]`` is "Picture 1") and messages.

    Tools read it with :func:`current_tool_context` (e.g. an image tool cropping "Picture 2").
    """

    images: list[Image.Image]
    messages: list[Message]


_tool_context: ContextVar[ToolContext | None] = ContextVar("qvl_agent_tool_context", default=None)


def current_tool_context() -> ToolContext | None:
    """The :class:`ToolContext` of the agent call running this tool, or None outside an agent run."""
    return _tool_context.get()


@contextlib.contextmanager
def tool_context(images: Sequence[Image.Image], messages: Sequence[Message] = ()) -> Iterator[ToolContext]:
    """Run code (a tool function, a plugin's test) as if called by an agent whose conversation has
    ``images``. Note that context does not follow into new threads: call the tool function directly."""
    context = ToolContext(images=list(images), messages=list(messages))
    token = _tool_context.set(context)
    try:
        yield context
    finally:
        _tool_context.reset(token)


def _with_context(func: Callable[..., Any], context: ToolContext) -> Callable[..., Any]:
    """``func`` running with ``context`` set, in whatever thread or event loop the tool runner uses."""
    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            token = _tool_context.set(context)
            try:
                return await func(*args, **kwargs)
            finally:
                _tool_context.reset(token)

        return run_async

    @functools.wraps(func)
    def run(*args: Any, **kwargs: Any) -> Any:
        token = _tool_context.set(context)
        try:
            return func(*args, **kwargs)
        finally:
            _tool_context.reset(token)

    return run


# -- the agent ----------------------------------------------------------------------------------------------------


class Agent:
    """Runs a model with tools until it gives a final answer or ``max_steps`` model calls were made.

    :param model: a :class:`ModelBackend` or a model spec resolved by the plugins (``"demo"``, a checkpoint
        directory, ``"openai+http://host:port/v1"``).
    :param tools: :class:`~qvl_agent.tools.Tool` objects, names of tools registered by plugins, or plain
        typed functions (turned into tools with ``Tool.from_function``).
    :param protocol: the function-calling protocol (name or object); ``"react"`` is Qwen-VL's own.
    :param system: a system message put first when the conversation has none.
    :param max_steps: the most model calls one run may make.
    :param image_limits: the policy for loading pictures (sizes, local folders, http): image paths/URLs given to
        the run, and ``<img>PATH</img>`` written in message text. None: the library defaults (any local file).
    """

    def __init__(
        self,
        model: ModelBackend | str = "demo",
        tools: Sequence[Any] | None = None,
        protocol: str | FunctionCallProtocol = "react",
        system: str | None = None,
        max_steps: int = 5,
        image_limits: ImageLimits | None = None,
    ) -> None:
        if max_steps < 1:
            raise ValueError(f"max_steps must be at least 1, got {max_steps}")
        self.backend = _resolve_backend(model)
        self.tools = _resolve_tools(tools or [])
        self.protocol = _resolve_protocol(protocol)
        self.system = system
        self.max_steps = max_steps
        self.image_limits = image_limits

    @property
    def functions(self) -> list[FunctionSpec] | None:
        """The tool specs shown to the model (None when there are no tools)."""
        return [tool.spec() for tool in self.tools.values()] or None

    def run(self, prompt: Prompt, images: Sequence[ImageInput] | None = None, **gen: Any) -> AgentResult:
        """Run the loop to the end and return the final answer with its trace."""
        for event in self.stream(prompt, images=images, **gen):
            if isinstance(event, FinalAnswer):
                return event.result
        raise RuntimeError("the agent loop ended without a final answer")  # pragma: no cover

    def stream(
        self, prompt: Prompt, images: Sequence[ImageInput] | None = None, **gen: Any
    ) -> Iterator[AgentEvent]:
        """Run the loop, yielding events as they happen; the last one is a :class:`FinalAnswer`.

        :param prompt: the user's text, one message, or a whole conversation (e.g. ``result.messages`` of a
            previous run plus a new user message).
        :param images: pictures added to the last user message, before its text: paths, URLs, ``data:``
            URLs or PIL images.
        :param gen: generation settings: ``max_new_tokens``, ``temperature``, ``top_p``, ``top_k``, ``seed``,
            ``stop``.
        """
        unknown = sorted(set(gen) - set(GENERATION_KEYS))
        if unknown:
            raise TypeError(f"unknown generation setting(s) {unknown}; accepted: {list(GENERATION_KEYS)}")
        messages = self._initial_messages(prompt, images)
        functions = self.functions
        steps: list[AgentStep] = []
        usage = [0, 0]

        for index in range(self.max_steps):
            yield StepStarted(step=index)
            request = self._request(messages, functions, gen)
            text = ""
            result: GenerationResult | None = None
            chunks = self.backend.stream(request)
            try:
                while True:
                    try:
                        delta = next(chunks)
                    except StopIteration as stop:
                        result = stop.value if isinstance(stop.value, GenerationResult) else None
                        break
                    text += delta
                    yield TextDelta(step=index, text=delta)
            finally:
                # a consumer that stops listening (client gone) stops the generation too
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()
            if result is None:
                result = GenerationResult(
                    text=text,
                    prompt_tokens=self.backend.count_tokens(request.query or ""),
                    completion_tokens=self.backend.count_tokens(text),
                )
            usage[0] += result.prompt_tokens
            usage[1] += result.completion_tokens

            reply = self.protocol.parse_reply(text, functions)
            step = AgentStep(
                index=index, text=text, thought=reply.thought, finish_reason=result.finish_reason
            )
            steps.append(step)
            call = reply.function_call
            if call is None or not functions:
                answer = reply.content if reply.content is not None else text
                messages.append(Message(role="assistant", content=answer))
                yield self._finish(answer, "answer", messages, steps, usage)
                return

            step.tool, step.arguments = call.name, call.arguments
            yield ToolCallStarted(step=index, tool=call.name, arguments=call.arguments, thought=reply.thought)
            messages.append(
                Message(
                    role="assistant",
                    content=reply.content,
                    function_call=FunctionCall(name=call.name, arguments=call.arguments),
                )
            )
            if index == self.max_steps - 1:
                step.observation = "(not run: the step budget ran out)"
                break
            observation, tool_images, is_error = self._call_tool(call, messages)
            step.observation, step.images, step.is_error = observation, tool_images, is_error
            yield ToolResultEvent(
                step=index, tool=call.name, content=observation, is_error=is_error, images=tool_images
            )
            messages.append(_observation_message(call.name, observation, tool_images))

        last = steps[-1]
        answer = (
            f"Stopped after {self.max_steps} step(s) without a final answer: the step budget ran out. "
            f"The last step asked for {last.tool!r} with arguments {last.arguments}."
        )
        yield self._finish(answer, "max_steps", messages, steps, usage)

    # -- helpers ------------------------------------------------------------------------------------------------

    def _initial_messages(self, prompt: Prompt, images: Sequence[ImageInput] | None) -> list[Message]:
        if isinstance(prompt, str):
            messages = [Message(role="user", content=prompt)]
        elif isinstance(prompt, Message):
            messages = [prompt.model_copy()]
        else:
            messages = [m.model_copy() for m in prompt]
        if not messages:
            raise ValueError("the prompt has no messages")
        if images:
            users = [i for i, m in enumerate(messages) if m.role == "user"]
            if not users:
                raise ValueError(
                    "images were given but the conversation has no user message to attach them to"
                )
            last = messages[users[-1]]
            parts: list[TextPart | ImagePart] = [_image_part(img) for img in images]
            if isinstance(last.content, list):
                parts += list(last.content)
            elif last.content:
                parts.append(TextPart(text=last.content))
            messages[users[-1]] = last.model_copy(update={"content": parts})
        if self.system is not None and messages[0].role != "system":
            messages.insert(0, Message(role="system", content=self.system))
        return [_resolve_images(m, self.image_limits) for m in messages]

    def _request(
        self, messages: list[Message], functions: list[FunctionSpec] | None, gen: dict[str, Any]
    ) -> GenerationRequest:
        request = self.protocol.build_request(messages, functions)
        stops = list(request.stop)
        for word in [*self.protocol.stop_words(functions), *(gen.get("stop") or [])]:
            if word not in stops:
                stops.append(word)
        settings = {k: v for k, v in gen.items() if k != "stop" and v is not None}
        if self.image_limits is not None:
            settings["image_limits"] = self.image_limits
        return request.model_copy(update={"stop": stops, **settings})

    def _call_tool(self, call: FunctionCall, messages: list[Message]) -> tuple[str, list[Image.Image], bool]:
        tool = self.tools.get(call.name)
        if tool is None:
            available = ", ".join(self.tools) or "none"
            return f"Error: there is no tool named {call.name!r}. Available tools: {available}.", [], True
        pictures = [part.image for m in messages for part in m.images() if part.image is not None]
        context = ToolContext(images=pictures, messages=list(messages))
        result = dataclasses.replace(tool, func=_with_context(tool.func, context)).run(call.arguments)
        return result.content, list(result.images or []), bool(result.is_error)

    def _finish(
        self,
        answer: str,
        stopped: Literal["answer", "max_steps"],
        messages: list[Message],
        steps: list[AgentStep],
        usage: list[int],
    ) -> FinalAnswer:
        pictures = [part.image for m in messages for part in m.images() if part.image is not None]
        result = AgentResult(
            text=answer,
            steps=steps,
            messages=messages,
            stopped=stopped,
            images=pictures,
            prompt_tokens=usage[0],
            completion_tokens=usage[1],
        )
        result.finish_reason = steps[-1].finish_reason if stopped == "answer" else "max_steps"
        if stopped == "answer":
            from qvl_agent import plugins

            # the postprocess_response plugins (grounding boxes, ...) fill in the response
            processed = plugins.postprocess(result, ResponseContext(messages=messages))
            if isinstance(processed, AgentResult):
                result = processed
        return FinalAnswer(text=answer, result=result)


def _observation_message(tool: str, observation: str, images: list[Image.Image]) -> Message:
    """The function-result message: the observation text, then any returned pictures (each rendered by the
    protocol as the next ``Picture N``, so the model sees it)."""
    if not images:
        return Message(role="function", name=tool, content=observation)
    parts: list[TextPart | ImagePart] = [TextPart(text=observation + "\n")] if observation.strip() else []
    parts += [ImagePart(url=f"tool://{tool}/{i}", image=image) for i, image in enumerate(images)]
    return Message(role="function", name=tool, content=parts)


# -- resolution of the constructor's arguments ---------------------------------------------------------------


def _resolve_backend(model: ModelBackend | str) -> ModelBackend:
    if isinstance(model, ModelBackend):
        return model
    if isinstance(model, str):
        from qvl_agent import plugins

        return plugins.resolve_model(model)
    raise TypeError(f"model must be a ModelBackend or a model spec string, got {type(model).__name__}")


def _resolve_protocol(protocol: str | FunctionCallProtocol) -> FunctionCallProtocol:
    if isinstance(protocol, FunctionCallProtocol):
        return protocol
    from qvl_agent import plugins

    return plugins.get_protocol(protocol)


def _resolve_tools(tools: Sequence[Any]) -> dict[str, Any]:
    from qvl_agent.tools import Tool

    resolved: dict[str, Any] = {}
    registered: dict[str, Any] | None = None
    for item in tools:
        if isinstance(item, str):
            if registered is None:
                from qvl_agent import plugins

                registered = plugins.get_tools()
            if item not in registered:
                known = ", ".join(sorted(registered)) or "none"
                raise ValueError(f"unknown tool {item!r}; tools provided by the installed plugins: {known}")
            tool = registered[item]
        elif isinstance(item, Tool):
            tool = item
        elif callable(item):
            tool = Tool.from_function(item)
        else:
            raise TypeError(f"a tool must be a Tool, a registered tool name or a function, got {item!r}")
        if tool.name in resolved:
            raise ValueError(f"two tools are named {tool.name!r}")
        resolved[tool.name] = tool
    return resolved


def _image_part(image: ImageInput) -> ImagePart:
    if isinstance(image, ImagePart):
        return image
    if isinstance(image, Image.Image):
        return ImagePart(image=image)
    if isinstance(image, (str, Path)):
        return ImagePart(url=str(image))
    raise TypeError(f"an image must be a path, URL or PIL image, got {type(image).__name__}")


def _resolve_images(message: Message, limits: ImageLimits | None = None) -> Message:
    """Fetch (through the ``fetch_image`` plugins) every picture of ``message`` not decoded yet."""
    if not any(part.image is None for part in message.images()):
        return message
    from qvl_agent import plugins

    parts = []
    for part in message.content:  # type: ignore[union-attr]
        if isinstance(part, ImagePart) and part.image is None:
            if not part.url:
                raise ValueError("an image part has neither a url nor an image")
            part = part.model_copy(update={"image": plugins.fetch_image(part.url, limits)})
        parts.append(part)
    return message.model_copy(update={"content": parts})
