"""Console fixtures: an isolated plugin manager with a per-test plugin (scripted model + real tools), and a
console served on a free loopback port."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from qvl_agent import plugins
from qvl_agent.agent import current_tool_context
from qvl_agent.hookspecs import hookimpl
from qvl_agent.testing import ScriptedBackend
from qvl_agent.tools import Tool

#: a ReAct step calling ``pixel_colour`` on the red circle's centre, then a grounded final answer
TOOL_CALL = (
    "Thought: I should check the colour of the object at the top left.\n"
    "Action: pixel_colour\n"
    'Action Input: {"x": 190, "y": 206}\n'
    "Observation:"
)
GROUNDED_ANSWER = (
    "Thought: I now know the final answer\n"
    "Final Answer: The <ref>red circle</ref><box>(93,109),(289,304)</box> is at the top left."
)
#: the red circle of ``examples/shapes.png`` in [0,1000) coordinates, and its pixels on the 256x256 picture
RED_CIRCLE_NORM = (93, 109, 289, 304)

EXAMPLES = Path(__file__).resolve().parents[2] / "qvl_agent" / "console" / "examples"


def pixel_colour(x: int, y: int) -> str:
    """The colour of Picture 1 at a point given in [0,1000) coordinates, as an RGB triple."""
    context = current_tool_context()
    if context is None or not context.images:
        raise ValueError("no picture in the conversation")
    image = context.images[0]
    px = min(image.width - 1, x * image.width // 1000)
    py = min(image.height - 1, y * image.height // 1000)
    return "rgb{}".format(image.convert("RGB").getpixel((px, py)))


def broken_tool(n: int) -> int:
    """A tool that always fails."""
    raise RuntimeError(f"the broken tool broke on {n}")


def thumbnail(size: int) -> Image.Image:
    """Picture 1 shrunk to ``size`` pixels on its longer side."""
    context = current_tool_context()
    assert context is not None
    image = context.images[0].copy()
    image.thumbnail((size, size))
    return image


class ConsoleTestPlugin:
    """Registers real tools and a ``scripted-test`` model whose replies each test sets."""

    TOOL_CALL = TOOL_CALL
    GROUNDED_ANSWER = GROUNDED_ANSWER
    RED_CIRCLE_NORM = RED_CIRCLE_NORM
    EXAMPLES = EXAMPLES

    def __init__(self) -> None:
        self.backend = ScriptedBackend([TOOL_CALL, GROUNDED_ANSWER], name="scripted-test")

    @hookimpl
    def register_tools(self, register):
        for func in (pixel_colour, broken_tool, thumbnail):
            register(Tool.from_function(func))

    @hookimpl
    def register_models(self, register):
        register("scripted-test", lambda spec: self.backend)


@pytest.fixture
def console_plugin(plugin_manager: plugins.PluginManager) -> ConsoleTestPlugin:
    """This test plugin on a fresh plugin manager (built-ins + it, no external plugins) for the test."""
    plugin = ConsoleTestPlugin()
    plugin_manager.register(plugin, name="console-test")
    return plugin


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def live_console(console_plugin: ConsoleTestPlugin) -> Iterator[tuple[str, ConsoleTestPlugin]]:
    """The console served on a free loopback port with the scripted model; yields (url, plugin)."""
    from qvl_agent.console.app import launch_console

    demo = launch_console(
        "scripted-test",
        host="127.0.0.1",
        port=free_port(),
        launch_kwargs={"prevent_thread_lock": True, "quiet": True},
    )
    try:
        yield demo.local_url, console_plugin
    finally:
        demo.close()
