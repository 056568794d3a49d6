"""``qvl-agent chat``: one-shot and interactive, streaming, tool calls, pictures, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from qvl_agent.cli import main
from qvl_agent.hookspecs import hookimpl
from qvl_agent.testing import ScriptedBackend
from qvl_agent.tools import Tool


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


class ScriptedModels:
    """A per-test plugin: model "scripted" answers from ``replies``; tool "add"."""

    def __init__(self, replies: list[str]) -> None:
        self.backend = ScriptedBackend(replies)

    @hookimpl
    def register_models(self, register):
        register("scripted", lambda spec: self.backend)

    @hookimpl
    def register_tools(self, register):
        register(Tool.from_function(add))


@pytest.fixture
def scripted(plugin_manager):
    def install(replies: list[str]) -> ScriptedBackend:
        plugin = ScriptedModels(replies)
        plugin_manager.register(plugin, name="scripted-models")
        return plugin.backend

    return install


def invoke(*args: str, input: str | None = None):
    return CliRunner().invoke(main, ["chat", *args], input=input, catch_exceptions=False)


def test_one_shot_answer_streams_to_stdout(scripted) -> None:
    backend = scripted(["A red square."])
    result = invoke("--model", "scripted", "What is it?")
    assert result.exit_code == 0
    assert result.stdout == "A red square.\n"
    assert backend.requests[0].query == "What is it?"


def test_tool_calls_are_shown_and_the_answer_printed(scripted) -> None:
    scripted(
        [
            'Thought: add them\nAction: add\nAction Input: {"a": 17, "b": 25}',
            "Thought: I now know the final answer\nFinal Answer: 42",
        ]
    )
    result = invoke("--model", "scripted", "--tool", "add", "17 + 25?")
    assert result.exit_code == 0
    assert result.stdout == "42\n"
    assert '→ add({"a": 17, "b": 25})' in result.stderr and "← 42" in result.stderr
    assert "Thought: add them" in result.stderr


def test_images_system_and_settings_reach_the_model(scripted, tmp_path: Path) -> None:
    backend = scripted(["<ref>it</ref><box>(0,0),(500,500)</box>"])
    path = tmp_path / "pic.png"
    Image.new("RGB", (30, 20), "blue").save(path)
    result = invoke(
        "-m", "scripted", "--image", str(path), "--system", "Be terse.", "--max-new-tokens", "9", "Where?"
    )
    assert result.exit_code == 0
    request = backend.requests[0]
    assert [im.size for im in request.images] == [(30, 20)] and request.max_new_tokens == 9
    assert request.system == "Be terse." or request.query.startswith("Be terse.")
    assert "box it [0, 0, 500, 500] = pixels [0, 0, 15, 10] on picture 1" in result.stderr


def test_json_output(scripted) -> None:
    scripted(['Thought: t\nAction: add\nAction Input: {"a": 1, "b": 2}', "Thought: done\nFinal Answer: 3"])
    result = invoke("-m", "scripted", "-t", "add", "--json", "1+2?")
    data = json.loads(result.stdout)
    assert (
        data["text"] == "3" and data["steps"][0]["tool"] == "add" and data["steps"][0]["observation"] == "3"
    )


def test_step_budget_exhausted_exit_status(scripted) -> None:
    scripted(['Thought: again\nAction: add\nAction Input: {"a": 1, "b": 1}'])
    result = invoke("-m", "scripted", "-t", "add", "--max-steps", "2", "loop")
    assert result.exit_code == 3 and "step budget ran out" in result.stdout


def test_interactive_loop_keeps_the_conversation(scripted, tmp_path: Path) -> None:
    backend = scripted(["Hello!", "It is blue.", "Fresh start."])
    path = tmp_path / "pic.png"
    Image.new("RGB", (8, 8), "blue").save(path)
    result = invoke("-m", "scripted", input=f"Hi\n/image {path}\nWhat colour?\n/reset\nAgain\n/quit\n")
    assert result.exit_code == 0
    assert result.stdout.splitlines() == ["Hello!", "It is blue.", "Fresh start."]
    second, third = backend.requests[1], backend.requests[2]
    assert second.history == [("Hi", "Hello!")] and len(second.images) == 1
    assert third.history == [] and third.images == []


def test_errors_are_one_line_with_non_zero_exit(scripted, tmp_path: Path) -> None:
    scripted(["unused"])
    missing = invoke("-m", "scripted", "--image", str(tmp_path / "nope.png"), "hi")
    assert missing.exit_code == 1
    assert missing.stderr.startswith("Error: ") and len(missing.stderr.strip().splitlines()) == 1
    assert "nope.png" in missing.stderr
    unknown_tool = invoke("-m", "scripted", "--tool", "nope", "hi")
    assert unknown_tool.exit_code == 1 and "unknown tool 'nope'" in unknown_tool.stderr
    unknown_model = invoke("-m", "no-such-model", "hi")
    assert unknown_model.exit_code == 1 and "no plugin provides a model" in unknown_model.stderr


def test_interactive_errors_do_not_end_the_session(scripted, tmp_path: Path) -> None:
    scripted(["Still here."])
    result = invoke("-m", "scripted", input=f"/image {tmp_path / 'nope.png'}\nlook\nhello\n")
    assert result.exit_code == 0
    assert "Error: " in result.stderr and result.stdout.strip() == "Still here."


@pytest.mark.testdata
def test_chat_with_the_tiny_checkpoint(tiny_checkpoint: Path, plugin_manager) -> None:
    picture = tiny_checkpoint / "images" / "img_a.png"
    result = invoke(
        "--model", str(tiny_checkpoint), "--image", str(picture), "--max-new-tokens", "6", "Describe"
    )
    assert result.exit_code == 0 and result.stdout.strip()
