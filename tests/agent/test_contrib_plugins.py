"""The contrib plugin packages, once installed (``pip install -e plugins_contrib/<name>``, done by
scripts/test.sh), provide their tools through the ``qvl_agent`` entry points; disabled plugins do not."""

from __future__ import annotations

import importlib.metadata

import pytest
from PIL import Image, ImageDraw

from qvl_agent import plugins
from qvl_agent.agent import Agent
from qvl_agent.testing import ScriptedBackend

CONTRIB = {
    "qvl-agent-calculator": ("calculator", {"calculator"}),
    "qvl-agent-image-tools": ("image_tools", {"zoom", "image_info", "draw"}),
    "qvl-agent-sqlite": ("sqlite", {"sql_query", "sql_tables"}),
}


def installed(distribution: str) -> bool:
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@pytest.fixture(params=sorted(CONTRIB))
def contrib(request: pytest.FixtureRequest) -> tuple[str, str, set[str]]:
    dist = request.param
    if not installed(dist):
        pytest.skip(f"{dist} is not installed (pip install -e plugins_contrib/{dist})")
    entry_point, tools = CONTRIB[dist]
    return dist, entry_point, tools


def test_installed_package_registers_its_tools(contrib) -> None:
    dist, entry_point, tools = contrib
    pm = plugins.create_plugin_manager(allowed=entry_point)
    assert tools <= set(plugins.get_tools(pm))
    info = {p.name: p for p in plugins.list_plugins(pm)}[entry_point]
    assert not info.failed and info.version == importlib.metadata.version(dist)
    assert "register_tools" in info.hooks and not info.builtin


def test_disabled_plugins_do_not_appear(contrib) -> None:
    dist, entry_point, tools = contrib
    none = plugins.create_plugin_manager(allowed="")
    assert not tools & set(plugins.get_tools(none))
    others = ",".join(ep for ep, _ in CONTRIB.values() if ep != entry_point)
    assert not tools & set(plugins.get_tools(plugins.create_plugin_manager(allowed=others)))
    # selecting by distribution name works too
    assert tools <= set(plugins.get_tools(plugins.create_plugin_manager(allowed=dist)))


def test_environment_variable_controls_loading(contrib, monkeypatch: pytest.MonkeyPatch) -> None:
    _, entry_point, tools = contrib
    monkeypatch.setenv(plugins.PLUGINS_ENV, "")
    assert not tools & set(plugins.get_tools(plugins.create_plugin_manager()))
    monkeypatch.setenv(plugins.PLUGINS_ENV, f" {entry_point} , some-other-plugin")
    assert tools <= set(plugins.get_tools(plugins.create_plugin_manager()))
    monkeypatch.delenv(plugins.PLUGINS_ENV)
    assert tools <= set(plugins.get_tools(plugins.create_plugin_manager()))


@pytest.fixture
def everything() -> plugins.PluginManager:
    missing = [d for d in CONTRIB if not installed(d)]
    if missing:
        pytest.skip(f"not installed: {missing}")
    pm = plugins.create_plugin_manager(allowed=",".join(ep for ep, _ in CONTRIB.values()))
    previous = plugins.set_plugin_manager(pm)
    yield pm
    plugins.set_plugin_manager(previous)


def test_agent_uses_installed_tools_by_name(everything) -> None:
    scene = Image.new("RGB", (300, 200), "white")
    ImageDraw.Draw(scene).ellipse((250, 20, 258, 28), fill="blue")
    backend = ScriptedBackend(
        [
            'Thought: the dot is tiny.\nAction: zoom\nAction Input: {"image": 1, "box": [800, 50, 900, 200]}',
            'Thought: 2 dots.\nAction: calculator\nAction Input: {"expression": "2 * 21"}',
            "Thought: I now know the final answer\nFinal Answer: 42",
        ]
    )
    result = Agent(backend, tools=["zoom", "calculator"]).run("Look closer, then compute.", images=[scene])
    zoom_step, calc_step, _ = result.steps
    assert not zoom_step.is_error and max(zoom_step.images[0].size) >= 448
    assert calc_step.observation == "42"
    # the zoomed crop was the second picture the model saw on its next step
    assert len(backend.requests[1].images) == 2 and backend.requests[1].images[1] is zoom_step.images[0]
    assert result.text == "42"
