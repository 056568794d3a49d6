"""Every example runs: the custom plugin package, the image + tool agent script, the grounding script."""

from __future__ import annotations

import importlib
import runpy
import sys
from pathlib import Path

import pytest
from PIL import Image

from qvl_agent import plugins
from qvl_agent.agent import Agent
from qvl_agent.hookspecs import hookimpl
from qvl_agent.testing import ScriptedBackend

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def scripted_model(plugin_manager):
    """Registers model "scripted" answering with the given replies; returns its backend."""

    def install(replies: list[str]) -> ScriptedBackend:
        backend = ScriptedBackend(replies)

        class Models:
            @hookimpl
            def register_models(self, register):
                register("scripted", lambda spec: backend)

        plugin_manager.register(Models(), name="scripted-models")
        return backend

    return install


def example(name: str) -> dict:
    return runpy.run_path(str(EXAMPLES / name), run_name="example")


def test_custom_plugin_package(plugin_manager, monkeypatch: pytest.MonkeyPatch) -> None:
    pyproject = (EXAMPLES / "custom_plugin" / "pyproject.toml").read_text()
    assert '[project.entry-points.qvl_agent]\ncolors = "qvl_agent_colors"' in pyproject
    monkeypatch.syspath_prepend(str(EXAMPLES / "custom_plugin"))
    module = importlib.import_module("qvl_agent_colors")
    plugin_manager.register(module, name="colors")
    assert "color_of" in plugins.get_tools()

    picture = Image.new("RGB", (100, 100), "white")
    picture.paste((220, 30, 30), (50, 0, 100, 50))  # top right quarter is red
    backend = ScriptedBackend(
        [
            'Thought: check\nAction: color_of\nAction Input: {"image": 1, "x": 900, "y": 100}',
            'Thought: and here\nAction: color_of\nAction Input: {"image": 1, "x": 100, "y": 900}',
            "Thought: I now know the final answer\nFinal Answer: red and white",
        ]
    )
    result = Agent(backend, tools=["color_of"]).run("Colours?", images=[picture])
    assert [s.observation for s in result.tool_calls] == ["red", "white"]
    sys.modules.pop("qvl_agent_colors", None)


def test_agent_with_tools_script(scripted_model, capsys: pytest.CaptureFixture[str]) -> None:
    backend = scripted_model(
        [
            'Thought: 3 circles.\nAction: multiply\nAction Input: {"a": 3, "b": 2.5}',
            "Thought: I now know the final answer\nFinal Answer: 7.5 points",
        ]
    )
    example("agent_with_tools.py")["main"](["--model", "scripted"])
    out = capsys.readouterr().out.splitlines()
    assert out == ['-> multiply({"a": 3, "b": 2.5})', "<- 7.5", "Answer: 7.5 points"]
    assert [im.size for im in backend.requests[0].images] == [(448, 448)]


def test_grounding_script_saves_the_annotated_picture(scripted_model, tmp_path: Path, capsys) -> None:
    scripted_model(["<ref>the orange circle</ref><box>(700,100),(900,300)</box>"])
    module = example("grounding.py")
    out = tmp_path / "boxes.png"
    module["main"](["--model", "scripted", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "the orange circle: [700, 100, 900, 300]" in printed and f"saved {out}" in printed
    saved, original = Image.open(out).convert("RGB"), module["example_scene"]()
    assert saved.size == original.size
    # the box outline (x = 280 px, y 30..90 px) was drawn; far from it nothing changed
    assert any(saved.getpixel((280, y)) != original.getpixel((280, y)) for y in range(30, 90))
    assert saved.getpixel((20, 280)) == original.getpixel((20, 280))


@pytest.mark.testdata
def test_scripts_run_on_the_tiny_checkpoint(
    tiny_checkpoint: Path, plugin_manager, tmp_path: Path, capsys
) -> None:
    model = str(tiny_checkpoint)
    example("agent_with_tools.py")["main"](["--model", model, "--max-new-tokens", "8"])
    assert "Answer:" in capsys.readouterr().out
    out = tmp_path / "g.png"
    example("grounding.py")["main"](["--model", model, "--max-new-tokens", "8", "--out", str(out)])
    assert Image.open(out).size == (400, 300)
