"""The agent loop end to end on the real model core: the tiny reference checkpoint (random weights).

Its output is gibberish, so the test checks the loop survives whatever it generates and that the trace and
usage are consistent with the real tokenizer.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from qvl_agent.agent import Agent, FinalAnswer, TextDelta
from qvl_agent.backends import LocalQwenBackend
from qvl_agent.tools import Tool

pytestmark = [pytest.mark.testdata, pytest.mark.usefixtures("plugin_manager")]


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def test_agent_runs_the_tiny_model_with_an_image_and_a_tool(tiny_checkpoint: Path) -> None:
    backend = LocalQwenBackend.from_pretrained(str(tiny_checkpoint), name="tiny")
    agent = Agent(backend, tools=[Tool.from_function(add)], max_steps=2)
    picture = Image.open(tiny_checkpoint / "images" / "img_a.png")
    events = list(agent.stream("How many shapes are there, plus two?", images=[picture], max_new_tokens=12))

    final = events[-1]
    assert isinstance(final, FinalAnswer)
    result = final.result
    assert result.stopped in ("answer", "max_steps") and 1 <= len(result.steps) <= 2
    streamed = "".join(e.text for e in events if isinstance(e, TextDelta) and e.step == 0)
    assert streamed == result.steps[0].text
    assert result.completion_tokens <= 12 * len(result.steps) and result.prompt_tokens > 256
    assert [im.size for im in result.images][:1] == [picture.size]
    # the same agent continues the conversation (the picture is still part of it)
    again = agent.run([*result.messages[:1]], max_new_tokens=4)
    assert again.steps and again.prompt_tokens > 256


def test_agent_resolves_a_checkpoint_directory_through_the_plugins(tiny_checkpoint: Path) -> None:
    agent = Agent(str(tiny_checkpoint))
    assert isinstance(agent.backend, LocalQwenBackend)
    assert Agent(str(tiny_checkpoint)).backend is agent.backend  # loaded once, shared
    result = agent.run("Hello", max_new_tokens=5)
    assert result.completion_tokens == 5 and result.steps[0].finish_reason == "length"
