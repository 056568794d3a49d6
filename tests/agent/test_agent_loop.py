"""The agent loop's logic, driven by a scripted backend through the real ReAct protocol and Tool runner."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from qvl_agent.agent import (
    Agent,
    AgentResult,
    FinalAnswer,
    StepStarted,
    TextDelta,
    ToolCallStarted,
    ToolResultEvent,
    current_tool_context,
)
from qvl_agent.hookspecs import hookimpl
from qvl_agent.messages import ImagePart, Message, TextPart
from qvl_agent.testing import ScriptedBackend
from qvl_agent.tools import Tool

pytestmark = pytest.mark.usefixtures("plugin_manager")


def call(name: str, arguments: dict | str, thought: str = "I should use a tool.") -> str:
    args = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return f"Thought: {thought}\nAction: {name}\nAction Input: {args}\nObservation: (made up by the model)"


def final(answer: str) -> str:
    return f"Thought: I now know the final answer\nFinal Answer: {answer}"


class Recorder:
    """A typed tool function that records its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def add(self, a: int, b: int) -> int:
        """Add two integers.

        :param a: the first number
        :param b: the second number
        """
        self.calls.append((a, b))
        return a + b


def test_plain_answer_without_tools() -> None:
    backend = ScriptedBackend("Hello there.")
    result = Agent(backend).run("Hi!")
    assert isinstance(result, AgentResult)
    assert result.text == "Hello there."
    assert result.stopped == "answer" and result.steps[0].tool is None
    assert backend.requests[0].query == "Hi!" and backend.requests[0].history == []
    assert [m.role for m in result.messages] == ["user", "assistant"]


def test_tool_called_with_validated_arguments_and_observation_fed_back() -> None:
    rec = Recorder()
    backend = ScriptedBackend([call("add", {"a": 2, "b": 3}, "I need to add."), final("The sum is 5.")])
    result = Agent(backend, tools=[rec.add]).run("What is 2 + 3?")

    assert rec.calls == [(2, 3)]
    assert result.text == "The sum is 5."
    first, second = result.steps
    assert (first.tool, json.loads(first.arguments), first.observation) == ("add", {"a": 2, "b": 3}, "5")
    assert first.thought == "I need to add." and not first.is_error
    assert second.tool is None
    # the first prompt carries the ReAct tool description, the second continues the same assistant turn
    assert "add: Call this tool" in backend.requests[0].query
    assert "Observation:" in backend.requests[0].stop
    follow_up = backend.requests[1]
    assert follow_up.query is None
    assert follow_up.history[-1][1].endswith(
        'Action: add\nAction Input: {"a": 2, "b": 3}\nObservation: 5\nThought:'
    )
    # what the model invented after "Observation:" was cut by the stop word, never used
    assert "made up" not in follow_up.history[-1][1]


def test_invalid_arguments_become_an_observation_and_the_model_retries() -> None:
    rec = Recorder()
    backend = ScriptedBackend(
        [
            call("add", {"a": "two", "b": 3}),
            call("add", "not json at all"),
            call("add", {"a": 2, "b": 3}),
            final("5"),
        ]
    )
    result = Agent(backend, tools=[rec.add], max_steps=5).run("2 + 3?")
    assert rec.calls == [(2, 3)]
    assert [s.is_error for s in result.steps] == [True, True, False, False]
    assert "invalid arguments for add" in result.steps[0].observation
    assert "not valid JSON" in result.steps[1].observation
    # the model saw the complaint before its retry
    assert "Observation: Error: invalid arguments for add" in backend.requests[1].history[-1][1]
    assert result.text == "5"


def test_tool_exception_becomes_an_observation() -> None:
    def explode(text: str) -> str:
        """Always fails."""
        raise RuntimeError(f"cannot handle {text}")

    backend = ScriptedBackend([call("explode", {"text": "this"}), final("It failed, sorry.")])
    result = Agent(backend, tools=[explode]).run("go")
    step = result.steps[0]
    assert step.is_error and "RuntimeError: cannot handle this" in step.observation
    assert "RuntimeError: cannot handle this" in backend.requests[1].history[-1][1]
    assert result.text == "It failed, sorry."


def test_unknown_tool_is_reported_to_the_model() -> None:
    rec = Recorder()
    backend = ScriptedBackend([call("multiply", {"a": 1}), final("ok")])
    result = Agent(backend, tools=[rec.add]).run("go")
    assert result.steps[0].is_error
    assert "no tool named 'multiply'" in result.steps[0].observation and "add" in result.steps[0].observation
    assert rec.calls == []


def test_max_steps_is_honoured() -> None:
    rec = Recorder()
    backend = ScriptedBackend(call("add", {"a": 1, "b": 1}))
    result = Agent(backend, tools=[rec.add], max_steps=3).run("loop forever")
    assert len(backend.requests) == 3
    assert result.stopped == "max_steps" and result.finish_reason == "max_steps"
    assert "step budget ran out" in result.text and "3 step" in result.text
    assert len(result.steps) == 3 and len(rec.calls) == 2  # the last requested call is not run
    assert result.steps[-1].observation.startswith("(not run")


def test_tool_returned_image_becomes_the_next_picture() -> None:
    seen_counts: list[int] = []

    def zoom(factor: int) -> Image.Image:
        """Enlarge the first picture."""
        context = current_tool_context()
        seen_counts.append(len(context.images))
        first = context.images[0]
        return first.resize((first.width * factor, first.height * factor))

    picture = Image.new("RGB", (20, 10), "red")
    backend = ScriptedBackend([call("zoom", {"factor": 3}), final("It is red.")])
    result = Agent(backend, tools=[zoom]).run("What colour?", images=[picture])

    assert seen_counts == [1]
    first, second = backend.requests
    assert [im.size for im in first.images] == [(20, 10)]
    assert [im.size for im in second.images] == [(20, 10), (60, 30)]
    assert "Picture 1: <img>image-1</img>" in second.history[-1][0]
    assert "Observation: [image 60x30]\nPicture 2: <img>image-2</img>" in second.history[-1][1]
    assert [im.size for im in result.steps[0].images] == [(60, 30)]
    assert [im.size for im in result.images] == [(20, 10), (60, 30)]


def test_images_in_any_turn() -> None:
    a, b = Image.new("RGB", (8, 8), "blue"), Image.new("RGB", (16, 8), "green")
    conversation = [
        Message(role="user", content=[ImagePart(image=a), TextPart(text="What is this?")]),
        Message(role="assistant", content="A blue square."),
        Message(role="user", content="And this one?"),
    ]
    backend = ScriptedBackend("A green rectangle.")
    result = Agent(backend).run(conversation, images=[b])
    request = backend.requests[0]
    assert [im.size for im in request.images] == [(8, 8), (16, 8)]
    assert request.query.startswith("Picture 2: <img>image-2</img>") and request.query.endswith(
        "And this one?"
    )
    # the returned conversation can be continued
    more = Agent(ScriptedBackend("Yes.")).run([*result.messages, Message(role="user", content="Sure?")])
    assert more.text == "Yes." and len(more.messages) == 6


def test_image_paths_are_fetched_through_the_plugins(tmp_path) -> None:
    path = tmp_path / "pic.png"
    Image.new("RGBA", (12, 6), (1, 2, 3, 128)).save(path)
    backend = ScriptedBackend("ok")
    Agent(backend).run("look", images=[str(path)])
    (image,) = backend.requests[0].images
    assert image.size == (12, 6) and image.mode == "RGB"


def test_stream_yields_events_in_order() -> None:
    rec = Recorder()
    backend = ScriptedBackend([call("add", {"a": 4, "b": 5}), final("9")], chunk_size=3)
    events = list(Agent(backend, tools=[rec.add]).stream("4+5?"))
    kinds = [type(e).__name__ for e in events]
    assert kinds[0] == "StepStarted" and kinds[-1] == "FinalAnswer"
    i_call = kinds.index("ToolCallStarted")
    assert kinds[i_call + 1] == "ToolResultEvent" and kinds[i_call + 2] == "StepStarted"
    assert all(k == "TextDelta" for k in kinds[1:i_call])
    step0 = "".join(e.text for e in events if isinstance(e, TextDelta) and e.step == 0)
    assert step0 == call("add", {"a": 4, "b": 5}).split("Observation:")[0]
    started = next(e for e in events if isinstance(e, ToolCallStarted))
    assert (started.tool, json.loads(started.arguments)) == ("add", {"a": 4, "b": 5})
    assert next(e for e in events if isinstance(e, ToolResultEvent)).content == "9"
    assert isinstance(events[-1], FinalAnswer) and events[-1].text == "9"
    assert sum(isinstance(e, StepStarted) for e in events) == 2


def test_system_message_and_generation_settings_reach_the_backend() -> None:
    backend = ScriptedBackend("fine")
    Agent(backend, system="Be brief.").run("hi", max_new_tokens=7, temperature=0.0, stop=["END"])
    request = backend.requests[0]
    assert request.max_new_tokens == 7 and request.temperature == 0.0 and "END" in request.stop
    assert request.query.startswith("Be brief.")


def test_usage_is_summed_over_steps() -> None:
    rec = Recorder()
    backend = ScriptedBackend([call("add", {"a": 1, "b": 2}), final("3")])
    result = Agent(backend, tools=[rec.add]).run("1+2?")
    assert result.completion_tokens == sum(backend.count_tokens(s.text) for s in result.steps)
    assert result.prompt_tokens > 0


def test_tools_and_models_by_name_come_from_plugins(plugin_manager) -> None:
    class Plugin:
        @hookimpl
        def register_tools(self, register):
            register(Tool.from_function(Recorder().add))

        @hookimpl
        def register_models(self, register):
            register(
                "scripted-test", lambda spec: ScriptedBackend([call("add", {"a": 1, "b": 2}), final("3")])
            )

    plugin_manager.register(Plugin(), name="test-plugin")
    agent = Agent("scripted-test", tools=["add"])
    assert agent.run("1+2?").steps[0].observation == "3"


def test_bad_arguments_are_clear_errors() -> None:
    backend = ScriptedBackend("x")
    with pytest.raises(ValueError, match="unknown tool 'nope'"):
        Agent(backend, tools=["nope"])
    with pytest.raises(ValueError, match="max_steps"):
        Agent(backend, max_steps=0)
    with pytest.raises(TypeError, match="unknown generation setting"):
        Agent(backend).run("hi", temprature=0.5)
    with pytest.raises(TypeError, match="a tool must be"):
        Agent(backend, tools=[42])
    with pytest.raises(ValueError, match="unknown function-calling protocol"):
        Agent(backend, protocol="nope")
    with pytest.raises(ValueError, match="no plugin provides a model"):
        Agent("no-such-model")


def test_grounding_boxes_come_back_structured() -> None:
    picture = Image.new("RGB", (200, 100), "white")
    backend = ScriptedBackend("<ref>the dot</ref><box>(100,200),(300,400)</box> is here.")
    result = Agent(backend).run("Where is the dot?", images=[picture])
    (box,) = result.boxes
    assert box.label == "the dot" and box.norm == [100, 200, 300, 400] and box.image_index == 0
    assert box.pixels == pytest.approx([20, 20, 60, 40])
    assert result.text.startswith("<ref>the dot</ref>")


def test_closing_the_event_stream_stops_the_model() -> None:
    closed: list[bool] = []

    class Endless(ScriptedBackend):
        def stream(self, request):
            try:
                while True:
                    yield "word "
            finally:
                closed.append(True)

    events = Agent(Endless("unused")).stream("talk forever")
    deltas = [next(events) for _ in range(4)]
    assert [type(e).__name__ for e in deltas] == ["StepStarted", "TextDelta", "TextDelta", "TextDelta"]
    events.close()
    assert closed == [True]
