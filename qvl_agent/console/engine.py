"""The console's logic, without any Gradio: turns, the agent run of one turn, and what the chat shows.

The Gradio app (``app.py``) only wires widgets to these functions, so everything the console decides — which
messages appear, how a tool step looks, where boxes are drawn, how errors surface — is testable as plain
Python. Chat messages are Gradio "messages" dicts (``{"role", "content", "metadata"}``); nothing here imports
gradio.
"""

from __future__ import annotations

import html
import json
import re
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from qvl_agent.backends import ModelBackend
from qvl_agent.console.annotate import annotate_pictures
from qvl_agent.messages import Box, ImagePart, Message, TextPart

ChatMessage = dict[str, Any]

DEFAULT_SYSTEM = "You are a helpful assistant."


@dataclass
class Settings:
    """What the side panel controls for one turn."""

    model: str = "demo"
    tools: list[str] = field(default_factory=list)
    system: str = DEFAULT_SYSTEM
    temperature: float = 0.0
    top_p: float = 0.8
    max_tokens: int = 512
    max_steps: int = 5


@dataclass
class Turn:
    """One user turn and everything the console showed for it.

    Only strings and paths are kept (the Gradio state is copied per session); pictures are re-read when needed.
    ``answer`` is the final text the model gave (None while running or after a failure); it is what later turns
    see as the assistant's reply.
    """

    text: str
    files: list[str] = field(default_factory=list)
    shown: list[ChatMessage] = field(default_factory=list)
    answer: str | None = None
    annotated: list[str] = field(default_factory=list)
    tool_images: list[str] = field(default_factory=list)


@dataclass
class Update:
    """What changed after one agent event: the turn (its ``shown`` messages) and the latest annotated image."""

    turn: Turn
    annotated: str | None = None
    done: bool = False


# ---------------------------------------------------------------------------------------------- display text

_REF_BOX = re.compile(
    r"<ref>(?P<label>.*?)</ref>\s*(?P<shape><(?P<tag>box|quad)>(?P<coords>.*?)</(?P=tag)>)?", re.DOTALL
)
_LONE_SHAPE = re.compile(r"<(?P<tag>box|quad)>(?P<coords>.*?)</(?P=tag)>", re.DOTALL)


def answer_markdown(text: str) -> str:
    """Render a Qwen-VL answer for the chat: ``<ref>`` labels in bold, boxes as small coordinate tags.

    The raw tags would otherwise be swallowed by the HTML sanitiser or shown as unknown elements.
    """

    def coords(raw: str) -> str:
        numbers = re.findall(r"-?\d+", raw)
        return f"`[{', '.join(numbers)}]`" if numbers else ""

    def ref(match: re.Match[str]) -> str:
        label = f"**{html.escape(match.group('label').strip())}**"
        shape = coords(match.group("coords")) if match.group("shape") else ""
        return f"{label} {shape}" if shape else label

    text = _REF_BOX.sub(ref, text)
    return _LONE_SHAPE.sub(lambda m: coords(m.group("coords")), text)


def user_message(turn: Turn) -> ChatMessage:
    """The user's bubble: their pictures then their text."""
    content: list[Any] = [{"path": path} for path in turn.files]
    if turn.text:
        content.append(turn.text)
    return {"role": "user", "content": content}


def error_message(title: str, detail: str) -> ChatMessage:
    """An error shown in the chat; the console stays usable."""
    return {"role": "assistant", "content": f"⚠ **{title}**\n\n{detail}"}


def chat_history(turns: list[Turn]) -> list[ChatMessage]:
    """The whole chat as Gradio messages."""
    messages: list[ChatMessage] = []
    for turn in turns:
        messages.append(user_message(turn))
        messages.extend(turn.shown)
    return messages


# ------------------------------------------------------------------------------------------- the model side


def load_pictures(paths: list[str]) -> list[Image.Image]:
    """Decode the user's files through the ``fetch_image`` hooks; raises ImageLoadError naming the file."""
    from qvl_agent import plugins

    return [plugins.fetch_image(path) for path in paths]


def _visible(turns: list[Turn]) -> list[Turn]:
    """The turns the model sees: answered ones, and the last (the one being run)."""
    return [t for i, t in enumerate(turns) if t.answer is not None or i == len(turns) - 1]


def conversation(turns: list[Turn], pictures: dict[str, Image.Image]) -> list[Message]:
    """The OpenAI-shaped conversation the agent sees: every turn's pictures + text, and earlier answers.

    Earlier turns without an answer (failed or stopped) are left out so the model never sees half a turn.
    """
    messages: list[Message] = []
    for turn in _visible(turns):
        last = turn is turns[-1]
        parts: list[TextPart | ImagePart] = [ImagePart(url=p, image=pictures[p]) for p in turn.files]
        parts.append(TextPart(text=turn.text))
        messages.append(Message(role="user", content=parts))
        if not last:
            messages.append(Message(role="assistant", content=turn.answer))
    return messages


def conversation_pictures(turns: list[Turn], pictures: dict[str, Image.Image]) -> list[Image.Image]:
    """The pictures in the order the protocol numbers them (``Picture 1``, ``Picture 2`` …)."""
    order: list[Image.Image] = []
    for turn in _visible(turns):
        order.extend(pictures[p] for p in turn.files)
    return order


class ModelCache:
    """Resolves model specs through the plugin manager once and keeps the backends (loading is slow).

    ``options`` (``device``, ``dtype``: the console's ``--device`` / ``--dtype``) go to every model that runs
    in this process; a remote model's factory, which takes none, gets none."""

    def __init__(self, preset: ModelBackend | None = None, options: dict[str, Any] | None = None) -> None:
        self._models: dict[str, ModelBackend] = {}
        self._options = dict(options or {})
        self._lock = threading.Lock()
        if preset is not None:
            self._models[preset.name] = preset

    def get(self, spec: str) -> ModelBackend:
        with self._lock:
            if spec not in self._models:
                from qvl_agent import plugins

                self._models[spec] = plugins.resolve_model(spec, drop_unaccepted=True, **self._options)
            return self._models[spec]

    def names(self) -> list[str]:
        return list(self._models)


# ------------------------------------------------------------------------------------------ agent events


def _format_arguments(arguments: Any) -> str:
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return arguments
    return json.dumps(arguments, ensure_ascii=False, indent=2)


class TurnRunner:
    """Runs one turn through the agent and keeps the turn's chat messages up to date, event by event."""

    def __init__(self, turn: Turn, pictures: list[Image.Image], workdir: Path) -> None:
        self.turn = turn
        self.pictures = list(pictures)
        self.workdir = workdir
        self.draft: ChatMessage | None = None
        self.steps: dict[str, ChatMessage] = {}
        self.step_started: dict[str, float] = {}
        self.annotated: str | None = None

    # each handler mutates self.turn.shown

    def text(self, delta: str) -> None:
        if self.draft is None:
            self.draft = {"role": "assistant", "content": ""}
            self.turn.shown.append(self.draft)
        self.draft["content"] = self.draft["content"] + delta

    def tool_started(self, name: str, arguments: Any, thought: str | None, key: str) -> None:
        if self.draft is not None:  # the streamed ReAct text becomes the step's thought
            self.turn.shown.remove(self.draft)
            thought = thought or _strip_react(self.draft["content"])
            self.draft = None
        body = f"**Thought:** {thought.strip()}\n\n" if thought and thought.strip() else ""
        body += f"**Arguments**\n```json\n{_format_arguments(arguments)}\n```"
        step = {
            "role": "assistant",
            "content": body,
            "metadata": {"title": f"Calling tool `{name}` …", "status": "pending", "id": key},
        }
        self.steps[key] = step
        self.step_started[key] = time.monotonic()
        self.turn.shown.append(step)

    def tool_finished(
        self, name: str, observation: str, images: list[Image.Image], is_error: bool, key: str
    ) -> None:
        step = self.steps.get(key)
        if step is None:  # a result without a start event: show it on its own
            self.tool_started(name, {}, None, key)
            step = self.steps[key]
        self.draft = None
        label = "Error" if is_error else "Observation"
        step["content"] += f"\n\n**{label}**\n```\n{observation.strip() or '(empty)'}\n```"
        icon, verb = ("✗", "failed") if is_error else ("✓", "used")
        step["metadata"] = {
            **step["metadata"],
            "title": f"{icon} Tool `{name}` {verb}",
            "status": "done",
            "duration": round(time.monotonic() - self.step_started.get(key, time.monotonic()), 2),
        }
        for image in images:
            path = self._save(image, f"tool-{name}")
            self.turn.tool_images.append(path)
            self.turn.shown.append({"role": "assistant", "content": [{"path": path, "alt_text": name}]})

    def final(self, text: str, boxes: list[Box]) -> None:
        if self.draft is not None:
            self.turn.shown.remove(self.draft)
            self.draft = None
        self.turn.answer = text
        self.turn.shown.append({"role": "assistant", "content": answer_markdown(text) or "(empty answer)"})
        for index, image in annotate_pictures(self.pictures, boxes):
            path = self._save(image, f"grounding-picture{index + 1}")
            self.turn.annotated.append(path)
            self.annotated = path
            labels = sorted({b.label for b in boxes if b.label})
            caption = f"◎ Grounding on picture {index + 1}" + (f": {', '.join(labels)}" if labels else "")
            self.turn.shown.append(
                {"role": "assistant", "content": [caption, {"path": path, "alt_text": caption}]}
            )

    def fail(self, title: str, detail: str) -> None:
        for step in self.steps.values():
            if step["metadata"].get("status") == "pending":
                step["metadata"] = {**step["metadata"], "status": "done"}
        self.turn.shown.append(error_message(title, detail))

    def _save(self, image: Image.Image, stem: str) -> str:
        path = self.workdir / f"{stem}-{uuid.uuid4().hex[:8]}.png"
        image.save(path)
        return str(path)

    def handle(self, event: Any) -> bool:
        """Apply one :mod:`qvl_agent.agent` event; True when it was the final answer."""
        from qvl_agent.agent import FinalAnswer, StepStarted, TextDelta, ToolCallStarted, ToolResultEvent

        if isinstance(event, StepStarted):
            self.draft = None
        elif isinstance(event, TextDelta):
            self.text(event.text)
        elif isinstance(event, ToolCallStarted):
            self.tool_started(event.tool, event.arguments, event.thought, str(event.step))
        elif isinstance(event, ToolResultEvent):
            self.tool_finished(event.tool, event.content, list(event.images), event.is_error, str(event.step))
        elif isinstance(event, FinalAnswer):
            result = event.result
            if result.images:  # the conversation's pictures, tool pictures included, as boxes index them
                self.pictures = list(result.images)
            if getattr(result, "stopped", "answer") != "answer":
                self.fail("No final answer", event.text)
                return True
            self.final(event.text, list(result.boxes))
            return True
        return False


def _strip_react(text: str) -> str:
    """The thought part of a streamed ReAct step (the Action lines are shown as the call itself)."""
    text = text.split("\nAction:", 1)[0]
    return text.removeprefix("Thought:").strip()


def run_turn(
    turns: list[Turn],
    settings: Settings,
    models: ModelCache,
    workdir: Path | None = None,
    make_agent: Callable[..., Any] | None = None,
) -> Iterator[Update]:
    """Run the last turn of ``turns`` and yield an :class:`Update` after every change to its messages.

    Never raises for a bad picture, a model failure or a tool failure: each becomes an error message in the
    turn, and the final update has ``done=True``.
    """
    turn = turns[-1]
    workdir = workdir or Path(tempfile.mkdtemp(prefix="qvl-console-"))
    runner = TurnRunner(turn, [], workdir)
    try:
        pictures = _load_turn_pictures(turns)
    except PictureError as exc:
        runner.fail("Could not read an image", str(exc))
        yield Update(turn, done=True)
        return
    runner.pictures = conversation_pictures(turns, pictures)

    try:
        model = models.get(settings.model)
        if make_agent is None:
            from qvl_agent.agent import Agent as make_agent
        agent = make_agent(
            model=model, tools=list(settings.tools), system=settings.system, max_steps=settings.max_steps
        )
    except Exception as exc:
        runner.fail("Could not start the model", f"{type(exc).__name__}: {exc}")
        yield Update(turn, done=True)
        return

    finished = False
    try:
        for event in agent.stream(
            conversation(turns, pictures),
            temperature=settings.temperature,
            top_p=settings.top_p,
            max_new_tokens=settings.max_tokens,
        ):
            finished = runner.handle(event) or finished
            yield Update(turn, runner.annotated)
    except Exception as exc:
        runner.fail("The model failed", f"{type(exc).__name__}: {exc}")
        yield Update(turn, runner.annotated, done=True)
        return
    if not finished:
        runner.fail(
            "No answer", f"The agent stopped after {settings.max_steps} steps without a final answer."
        )
    yield Update(turn, runner.annotated, done=True)


class PictureError(Exception):
    """A picture of the conversation could not be decoded; the message names the file."""


def _load_turn_pictures(turns: list[Turn]) -> dict[str, Image.Image]:
    loaded: dict[str, Image.Image] = {}
    for path in dict.fromkeys(p for t in _visible(turns) for p in t.files):
        try:
            (loaded[path],) = load_pictures([path])
        except Exception as exc:
            raise PictureError(f"`{Path(path).name}`: {exc}") from exc
    return loaded
