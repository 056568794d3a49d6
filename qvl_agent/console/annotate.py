"""Draw grounding boxes on the pictures they refer to.

Qwen-VL writes boxes as ``<ref>label</ref><box>(x1,y1),(x2,y2)</box>`` with coordinates normalised to
[0, 1000); the grounding post-processor turns them into :class:`~qvl_agent.messages.Box` objects. This module
only draws: it never parses text.
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

from qvl_agent.messages import Box

# high-contrast colours that stay readable on photos and on flat synthetic scenes
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 57, 70),
    (29, 120, 230),
    (46, 170, 80),
    (245, 160, 20),
    (150, 70, 200),
    (20, 170, 180),
    (220, 60, 160),
    (120, 120, 30),
)


def box_pixels(box: Box, size: tuple[int, int]) -> list[float]:
    """The box's corner coordinates in pixels on a picture of ``size`` (width, height).

    Uses ``box.pixels`` when the post-processor filled it in, else scales the [0, 1000) ``norm`` values.
    """
    if box.pixels:
        return list(box.pixels)
    width, height = size
    return [v / 1000 * (width if i % 2 == 0 else height) for i, v in enumerate(box.norm)]


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: fixed-size bitmap font
        return ImageFont.load_default()


def draw_boxes(image: Image.Image, boxes: Sequence[Box]) -> Image.Image:
    """Return a copy of ``image`` with every box drawn as a coloured outline with its label.

    Labels that repeat share a colour, so "the red car" boxes look alike across an answer.
    """
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    scale = max(out.size) / 512
    line = max(2, round(3 * scale))
    font = _font(max(11, round(14 * scale)))
    colours: dict[str | None, tuple[int, int, int]] = {}

    for box in boxes:
        colour = colours.setdefault(box.label, PALETTE[len(colours) % len(PALETTE)])
        coords = box_pixels(box, out.size)
        if box.quad and len(coords) >= 8:
            points = list(zip(coords[0:8:2], coords[1:8:2], strict=True))
            draw.polygon(points, outline=colour, width=line)
            anchor_x, anchor_y = min(p[0] for p in points), min(p[1] for p in points)
        elif len(coords) >= 4:
            x1, y1, x2, y2 = coords[:4]
            x1, x2 = sorted((x1, x2))
            y1, y2 = sorted((y1, y2))
            draw.rectangle((x1, y1, x2, y2), outline=colour, width=line)
            anchor_x, anchor_y = x1, y1
        else:
            continue
        if box.label:
            _draw_label(draw, box.label, anchor_x, anchor_y, colour, font, out.size)
    return out


def _draw_label(
    draw: ImageDraw.ImageDraw,
    text: str,
    x: float,
    y: float,
    colour: tuple[int, int, int],
    font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
    size: tuple[int, int],
) -> None:
    """A filled tag above the box's top-left corner (inside the picture when the box touches its top)."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    pad = 3
    tag_w, tag_h = right - left + 2 * pad, bottom - top + 2 * pad
    tag_x = min(max(0.0, x), max(0.0, size[0] - tag_w))
    tag_y = y - tag_h if y - tag_h >= 0 else y
    draw.rectangle((tag_x, tag_y, tag_x + tag_w, tag_y + tag_h), fill=colour)
    draw.text((tag_x + pad - left, tag_y + pad - top), text, fill=(255, 255, 255), font=font)


def annotate_pictures(pictures: Sequence[Image.Image], boxes: Sequence[Box]) -> list[tuple[int, Image.Image]]:
    """Group boxes by the picture they refer to and draw them; returns ``(picture index, annotated image)``.

    A box without ``image_index`` refers to the most recent picture, as a model answering about "the
    picture" means the last one it was shown.
    """
    if not pictures:
        return []
    by_picture: dict[int, list[Box]] = {}
    for box in boxes:
        index = box.image_index if box.image_index is not None else len(pictures) - 1
        if 0 <= index < len(pictures):
            by_picture.setdefault(index, []).append(box)
    return [(index, draw_boxes(pictures[index], group)) for index, group in sorted(by_picture.items())]
