"""Built-in plugin: output formatters ``text``, ``markdown``, ``json`` and ``image``.

- ``text``: the answer with grounding tags stripped (``<ref>x</ref><box>…</box>`` → ``x``);
- ``markdown``: the answer, the tool calls and a table of the boxes;
- ``json``: the whole response (raw and clean text, boxes, steps, picture sizes) as a JSON string;
- ``image``: a copy of the picture the boxes refer to with the boxes and labels drawn (Pillow's default font).
"""

from __future__ import annotations

import json
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from qvl_agent.hookspecs import hookimpl
from qvl_agent.messages import AgentResponse, Box
from qvl_agent.model.errors import InputError
from qvl_agent.plugins.grounding import strip_grounding

FORMATS = ("text", "markdown", "json", "image")

_COLORS = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240)]


def to_text(response: AgentResponse) -> str:
    return strip_grounding(response.text).strip()


def to_markdown(response: AgentResponse) -> str:
    lines = [to_text(response)]
    if response.steps:
        lines += ["", "**Tool calls**", ""]
        for number, step in enumerate(response.steps, 1):
            status = " (error)" if step.is_error else ""
            lines.append(f"{number}. `{step.tool}({step.arguments or ''})`{status}")
            if step.observation:
                lines.append(f"   → {_one_line(step.observation)}")
    if response.boxes:
        lines += ["", "| # | label | box (0-1000) | pixels | picture |", "|---|---|---|---|---|"]
        for number, box in enumerate(response.boxes, 1):
            pixels = ", ".join(f"{v:.0f}" for v in box.pixels) if box.pixels else "-"
            picture = "-" if box.image_index is None else str(box.image_index + 1)
            label = (box.label or "").replace("|", "\\|")
            norm = ", ".join(str(v) for v in box.norm)
            lines.append(f"| {number} | {label} | {norm} | {pixels} | {picture} |")
    return "\n".join(lines)


def to_json(response: AgentResponse) -> str:
    data: dict[str, Any] = response.model_dump(mode="json")
    data["clean_text"] = to_text(response)
    data["image_sizes"] = [list(image.size) for image in response.images]
    return json.dumps(data, ensure_ascii=False, indent=2)


def draw_boxes(image: Image.Image, boxes: list[Box]) -> Image.Image:
    """A copy of ``image`` with each box (pixel coordinates) outlined and labelled."""
    canvas = image.convert("RGB").copy()
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    width = max(1, round(min(canvas.size) / 150))
    for number, box in enumerate(boxes):
        if not box.pixels:
            continue
        color = _COLORS[number % len(_COLORS)]
        points = [(box.pixels[i], box.pixels[i + 1]) for i in range(0, len(box.pixels), 2)]
        if box.quad:
            draw.polygon(points, outline=color, width=width)
        else:
            (x1, y1), (x2, y2) = points
            draw.rectangle([min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)], outline=color, width=width)
        if box.label:
            x, y = min(p[0] for p in points), min(p[1] for p in points)
            left, top, right, bottom = draw.textbbox((0, 0), box.label, font=font)
            text_y = max(0, y - (bottom - top) - 4)
            draw.rectangle([x, text_y, x + (right - left) + 4, text_y + (bottom - top) + 4], fill=color)
            draw.text((x + 2, text_y + 2 - top), box.label, fill=(255, 255, 255), font=font)
    return canvas


def to_image(response: AgentResponse) -> Image.Image:
    """The latest picture any box refers to, annotated (the last picture when no box has one)."""
    if not response.images:
        raise InputError("cannot format as 'image': the response has no picture to draw on")
    indexes = [b.image_index for b in response.boxes if b.image_index is not None]
    index = max(indexes) if indexes else len(response.images) - 1
    if index >= len(response.images):
        raise InputError(f"boxes refer to picture {index + 1} but the response has {len(response.images)}")
    return draw_boxes(response.images[index], [b for b in response.boxes if b.image_index == index])


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


_RENDERERS = {"text": to_text, "markdown": to_markdown, "json": to_json, "image": to_image}


@hookimpl(trylast=True)
def format_output(response: AgentResponse, fmt: str) -> Any:
    renderer = _RENDERERS.get(fmt)
    return None if renderer is None else renderer(response)
