"""A minimal qvl_agent plugin: one tool, registered through the ``register_tools`` hook.

Install it with ``pip install -e examples/custom_plugin``; ``qvl-agent tools`` then lists ``color_of``.
"""

from __future__ import annotations

from qvl_agent import Tool, hookimpl
from qvl_agent.agent import current_tool_context

NAMED_COLORS = {
    "black": (0, 0, 0),
    "white": (255, 255, 255),
    "red": (220, 30, 30),
    "green": (30, 160, 60),
    "blue": (30, 60, 220),
    "yellow": (240, 220, 40),
    "orange": (250, 140, 20),
    "purple": (130, 50, 170),
    "grey": (128, 128, 128),
}


def nearest_color_name(rgb: tuple[int, int, int]) -> str:
    """The name in :data:`NAMED_COLORS` closest to ``rgb``."""
    return min(
        NAMED_COLORS, key=lambda name: sum((a - b) ** 2 for a, b in zip(NAMED_COLORS[name], rgb, strict=True))
    )


def color_of(image: int = 1, x: int = 500, y: int = 500) -> str:
    """Name the colour of a picture at a point given in [0,1000) coordinates.

    :param image: the picture number, starting at 1
    :param x: horizontal position in [0,1000)
    :param y: vertical position in [0,1000)
    """
    context = current_tool_context()
    if context is None or not 1 <= image <= len(context.images):
        raise ValueError(f"there is no Picture {image}")
    picture = context.images[image - 1].convert("RGB")
    px = min(picture.width - 1, x * picture.width // 1000)
    py = min(picture.height - 1, y * picture.height // 1000)
    return nearest_color_name(picture.getpixel((px, py)))


@hookimpl
def register_tools(register):
    register(Tool.from_function(color_of))
