"""Built-in plugin: grounding post-processor.

Qwen-VL writes regions as ``<ref>label</ref><box>(x1,y1),(x2,y2)</box>`` (or ``<quad>`` with four points),
coordinates normalised to [0, 1000). :func:`parse_boxes` turns them into :class:`~qvl_agent.messages.Box`
objects with the label, the normalised coordinates, pixel coordinates on the picture they refer to and that
picture's index. The text itself is left untouched; the boxes are kept alongside it.

Which picture a box refers to follows the original ``_fetch_latest_picture``: the latest picture before the
box — the last picture of the conversation, or a picture the text itself introduced with ``<img>…</img>`` —
unless a picture index is pinned (``ResponseContext.image_index`` or ``options["grounding_image"]``).

Deliberate deviations from the original ``_fetch_all_box_with_ref``: a label also applies to boxes that
directly follow the first one (``<ref>cats</ref><box>…</box><box>…</box>`` labels both), quads are parsed
instead of ignored, and malformed boxes are skipped instead of raising.
"""

from __future__ import annotations

import logging
import re

from qvl_agent.hookspecs import hookimpl
from qvl_agent.messages import AgentResponse, Box, ResponseContext

logger = logging.getLogger(__name__)

_SPAN = re.compile(r"(<img>.*?</img>|<ref>.*?</ref>|<box>.*?</box>|<quad>.*?</quad>)", re.DOTALL)
_INT = re.compile(r"-?\d+")


def split_segments(text: str) -> list[tuple[str, str]]:
    """Split text into ``(kind, value)`` segments; kind is ``text``, ``img``, ``ref``, ``box`` or ``quad``."""
    segments = []
    for piece in _SPAN.split(text):
        if not piece:
            continue
        match = re.fullmatch(r"<(img|ref|box|quad)>(.*)</\1>", piece, re.DOTALL)
        if match:
            segments.append((match.group(1), match.group(2)))
        else:
            segments.append(("text", piece))
    return segments


def _coordinates(value: str, count: int) -> list[int] | None:
    numbers = [int(n) for n in _INT.findall(value)]
    # the numbers must be all there is besides brackets, commas and spaces
    if len(numbers) != count or re.sub(r"[-\d(),\s]", "", value):
        return None
    return numbers


def parse_boxes(
    text: str, image_sizes: list[tuple[int, int]] | None = None, image_index: int | None = None
) -> list[Box]:
    """Every box/quad in ``text``.

    :param text: model output (or any Qwen-VL formatted text, ``<img>`` spans included).
    :param image_sizes: ``(width, height)`` of the conversation's pictures, in order; the ``<img>`` spans in
        ``text`` are taken to be the last of them. Without sizes, ``pixels`` stays None.
    :param image_index: pin every box to this picture (0-based) instead of the latest one before it.
    :return: a list of :class:`Box`; malformed boxes are skipped.
    """
    if not isinstance(text, str):
        return []
    segments = split_segments(text)
    sizes = list(image_sizes or [])
    spans_in_text = sum(1 for kind, _ in segments if kind == "img")
    latest = len(sizes) - spans_in_text - 1 if sizes else -1
    boxes: list[Box] = []
    label: str | None = None
    for kind, value in segments:
        if kind == "img":
            latest += 1
            label = None
        elif kind == "ref":
            label = value.strip()
        elif kind in ("box", "quad"):
            norm = _coordinates(value, 4 if kind == "box" else 8)
            if norm is None:
                logger.debug("skipping malformed <%s>%s</%s>", kind, value, kind)
                continue
            index = image_index if image_index is not None else (latest if latest >= 0 else None)
            pixels = None
            if index is not None and 0 <= index < len(sizes):
                width, height = sizes[index]
                pixels = [v * (width if i % 2 == 0 else height) / 1000 for i, v in enumerate(norm)]
            boxes.append(Box(label=label, norm=norm, pixels=pixels, image_index=index, quad=kind == "quad"))
            # label stays set: a box directly after this one belongs to the same ref
        elif value.strip():
            label = None
    return boxes


def picture_asked_about(question: str, n_pictures: int) -> int:
    """Index of the picture a question is about: the last ``Picture N`` it names after its ``<img>``
    header, else the latest picture (``n_pictures - 1``)."""
    named = re.findall(r"\bPicture (\d+)\b", question.rsplit("</img>", 1)[-1])
    if named and 1 <= int(named[-1]) <= n_pictures:
        return int(named[-1]) - 1
    return n_pictures - 1


def strip_grounding(text: str) -> str:
    """The text a reader sees: ``<ref>x</ref><box>…</box>`` → ``x`` (the original web demo's cleaning),
    ``<quad>`` spans removed too (an unclosed one runs to the end of the text)."""
    text = text.replace("<ref>", "").replace("</ref>", "")
    text = re.sub(r"<box>.*?(?:</box>|$)", "", text, flags=re.DOTALL)
    return re.sub(r"<quad>.*?(?:</quad>|$)", "", text, flags=re.DOTALL)


@hookimpl
def postprocess_response(response: AgentResponse, context: ResponseContext) -> None:
    pinned = context.image_index
    if pinned is None and isinstance(context.options.get("grounding_image"), int):
        pinned = context.options["grounding_image"]
    sizes = [image.size for image in response.images]
    boxes = parse_boxes(response.text, sizes, pinned)
    if boxes or not response.boxes:
        response.boxes = boxes
