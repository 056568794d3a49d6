"""Image tools for qvl_agent agents: look closer at a region, read a picture's properties, draw boxes.

Boxes are given the way Qwen-VL writes them: ``[x1, y1, x2, y2]`` normalised to [0, 1000) on the picture.
Pictures are named by their number in the conversation ("Picture 1" is ``image=1``); the tools read them from
the running agent's :func:`qvl_agent.agent.current_tool_context`. A picture a tool returns becomes the next
picture of the conversation, so after ``zoom`` the model can look at the enlarged crop.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from PIL import Image, ImageDraw, ImageStat

from qvl_agent.agent import current_tool_context
from qvl_agent.hookspecs import hookimpl
from qvl_agent.tools import Tool, ToolResult

__version__ = "0.1.0"

#: the longer side of a zoomed crop is enlarged to at least this many pixels (Qwen-VL sees 448x448)
MIN_ZOOM_SIDE = 448
#: and never beyond this
MAX_ZOOM_SIDE = 2048

PICTURE_SCHEMA: dict[str, Any] = {
    "type": "integer",
    "minimum": 1,
    "description": "the picture number, starting at 1",
}
BOX_SCHEMA: dict[str, Any] = {
    "type": "array",
    "items": {"type": "integer", "minimum": 0, "maximum": 1000},
    "minItems": 4,
    "maxItems": 4,
    "description": "[x1, y1, x2, y2] in the picture's [0,1000) coordinates",
}


class ImageToolError(ValueError):
    """Bad box or picture number; the message is what the model reads."""


def get_picture(number: int) -> Image.Image:
    """Picture ``number`` (1-based) of the conversation the tool runs in."""
    context = current_tool_context()
    pictures = context.images if context is not None else []
    if not pictures:
        raise ImageToolError("there is no picture in this conversation")
    if not 1 <= number <= len(pictures):
        raise ImageToolError(f"there is no Picture {number}; the conversation has {len(pictures)} picture(s)")
    return pictures[number - 1]


def box_to_pixels(box: list[int], size: tuple[int, int]) -> tuple[int, int, int, int]:
    """A [0,1000) box → a pixel rectangle on a picture of ``size`` (at least one pixel wide and high)."""
    if len(box) != 4:
        raise ImageToolError(f"a box has 4 numbers [x1, y1, x2, y2], got {len(box)}")
    x1, y1, x2, y2 = box
    if not (x1 < x2 and y1 < y2):
        raise ImageToolError(f"box {box} is empty: need x1 < x2 and y1 < y2")
    width, height = size
    left, top = x1 * width // 1000, y1 * height // 1000
    right = max(left + 1, min(width, -(-x2 * width // 1000)))
    bottom = max(top + 1, min(height, -(-y2 * height // 1000)))
    return left, top, right, bottom


def zoom_image(image: Image.Image, box: list[int]) -> Image.Image:
    """Crop ``image`` to ``box`` and enlarge it (aspect ratio kept) so small details become visible."""
    crop = image.convert("RGB").crop(box_to_pixels(box, image.size))
    longest = max(crop.size)
    target = min(MAX_ZOOM_SIDE, max(MIN_ZOOM_SIDE, max(image.size)))
    scale = target / longest
    if scale <= 1:
        return crop
    size = (max(1, round(crop.width * scale)), max(1, round(crop.height * scale)))
    return crop.resize(size, Image.Resampling.BICUBIC)


def zoom(image: int, box: list[int]) -> ToolResult:
    """The ``zoom`` tool: picture ``image`` cropped to ``box`` and enlarged, returned as a new picture."""
    picture = get_picture(image)
    crop = zoom_image(picture, box)
    left, top, right, bottom = box_to_pixels(box, picture.size)
    return ToolResult(
        content="",
        images=[crop],
        data={"image": image, "box": box, "pixels": [left, top, right, bottom], "size": list(crop.size)},
    )


def describe_image(image: Image.Image) -> dict[str, object]:
    """Size, mode and mean colour of a picture."""
    rgb = image.convert("RGB")
    mean = [round(v) for v in ImageStat.Stat(rgb).mean]
    return {"width": image.width, "height": image.height, "mode": image.mode, "mean_rgb": mean}


def image_info(image: int) -> str:
    """The ``image_info`` tool: size, mode and mean colour of picture ``image`` as JSON."""
    return json.dumps({"image": image, **describe_image(get_picture(image))})


def draw_boxes_on(image: Image.Image, boxes: list[dict[str, Any]], color: str = "red") -> Image.Image:
    """A copy of ``image`` with each box outlined and labelled (Pillow's default font)."""
    out = image.convert("RGB")
    draw = ImageDraw.Draw(out)
    width = max(1, round(max(out.size) / 200))
    for item in boxes:
        left, top, right, bottom = box_to_pixels(item["box"], out.size)
        draw.rectangle((left, top, right - 1, bottom - 1), outline=color, width=width)
        if item.get("label"):
            draw.text((left + 2, max(0, top - 12)), str(item["label"]), fill=color)
    return out


def draw(image: int, boxes: list[dict[str, Any]], color: str = "red") -> ToolResult:
    """The ``draw`` tool: a copy of picture ``image`` with labelled boxes, returned as a new picture."""
    try:
        annotated = draw_boxes_on(get_picture(image), boxes, color)
    except ValueError as exc:
        if isinstance(exc, ImageToolError):
            raise
        raise ImageToolError(f"cannot draw with colour {color!r}: {exc}") from None
    return ToolResult(content="", images=[annotated], data={"image": image, "boxes": len(boxes)})


def make_tools() -> list[Tool]:
    """The three tools with the JSON Schemas the model sees."""
    return [
        Tool(
            name="zoom",
            description="Crop a picture to a box and enlarge it, to look closely at small details. "
            "The box is [x1, y1, x2, y2] in the picture's [0,1000) coordinates. "
            "The enlarged crop becomes the next picture.",
            parameters={
                "type": "object",
                "properties": {"image": PICTURE_SCHEMA, "box": BOX_SCHEMA},
                "required": ["image", "box"],
            },
            func=zoom,
        ),
        Tool(
            name="image_info",
            description="Width, height, colour mode and mean colour of a picture.",
            parameters={"type": "object", "properties": {"image": PICTURE_SCHEMA}, "required": ["image"]},
            func=image_info,
        ),
        Tool(
            name="draw",
            description="Draw labelled boxes on a picture. The annotated copy becomes the next picture.",
            parameters={
                "type": "object",
                "properties": {
                    "image": PICTURE_SCHEMA,
                    "boxes": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "properties": {"box": BOX_SCHEMA, "label": {"type": "string"}},
                            "required": ["box"],
                        },
                    },
                    "color": {"type": "string", "default": "red", "description": "a colour name or #rrggbb"},
                },
                "required": ["image", "boxes"],
            },
            func=draw,
        ),
    ]


@hookimpl
def register_tools(register: Callable[[Tool], None]) -> None:
    for tool in make_tools():
        register(tool)
