"""Zoom refinement: a backend wrapper that looks again, closer, at small regions.

A small model sees its picture at low resolution (the demo model: 128 px), so it finds an object a few
pixels wide but does not place its box exactly, and it answers a question about a small region from a
blur. :class:`ZoomRefineBackend` adds a second look on an enlarged crop, as the model's own ``zoom`` tool
does. The crop is a square three times the box, and at least a fifth of the picture, around it.

- **Small boxes in an answer.** The wrapper finds each small ``<ref>label</ref><box>…</box>`` again: it asks
  ``Find label.`` about the crop alone and maps the box it gets back to the whole picture.
- **A question about one small box.** For ``What is in <box>…</box>?``, the question is asked about the crop,
  with the box rewritten in the crop's coordinates.

"Small" means the box's longer side is under ``max_side`` (in the [0,1000) units boxes are written in).

The picture is the one the question names (``… in Picture 2``), otherwise the latest one. Some requests are
passed through unchanged:
- completion-mode requests (``query=None``);
- requests with stop words, which are tool-calling prompts;
- requests whose picture cannot be resolved.

The refined answer is the same in ``generate`` and ``stream``: ``stream`` sends the text up to the first
``<box>`` as it comes and the rest once the boxes are refined.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator
from typing import Any

from PIL import Image

from qvl_agent.backends import ModelBackend, _find_stop, _safe_prefix
from qvl_agent.messages import GenerationRequest, GenerationResult
from qvl_agent.plugins.grounding import picture_asked_about

Box = tuple[int, int, int, int]

_COORDS = r"\((\d+),(\d+)\),\((\d+),(\d+)\)"
#: a labelled box that is the only box of its label (not followed by a second ``<box>``)
_ANSWER_BOX = re.compile(r"<ref>(?P<label>[^<]+)</ref><box>" + _COORDS + r"</box>(?!<box>)")
_QUESTION_BOX = re.compile(r"<box>" + _COORDS + r"</box>")
_IMG = re.compile(r"<img>(.*?)</img>", re.DOTALL)
_IN_PICTURE = re.compile(r"\s*\bin Picture \d+\b")
_BOX_START = "<box>"


def zoom_region(box: Box, factor: float = 3.0, min_side: int = 200) -> Box:
    """The [0,1000) region a zoom looks at: a square ``factor`` times the box's longer side (at least
    ``min_side``), centred on the box, and moved inside the picture where it would cross an edge (a clipped
    region would be stretched when the crop is enlarged to the picture's shape)."""
    x1, y1, x2, y2 = box
    side = min(1000, round(max(factor * max(x2 - x1, y2 - y1), min_side)))
    left = min(max(0, round((x1 + x2 - side) / 2)), 1000 - side)
    top = min(max(0, round((y1 + y2 - side) / 2)), 1000 - side)
    return (left, top, left + side, top + side)


def into_region(box: Box, region: Box) -> Box:
    """``box`` (picture coordinates) in the coordinates of the crop ``region``, clipped to [0, 999]."""
    rx1, ry1, rx2, ry2 = region
    w, h = max(rx2 - rx1, 1), max(ry2 - ry1, 1)
    x1, y1, x2, y2 = box
    values = ((x1 - rx1) * 1000 / w, (y1 - ry1) * 1000 / h, (x2 - rx1) * 1000 / w, (y2 - ry1) * 1000 / h)
    return tuple(min(999, max(0, round(v))) for v in values)  # type: ignore[return-value]


def out_of_region(box: Box, region: Box) -> Box:
    """A box given in the crop ``region``'s coordinates, back in picture coordinates."""
    rx1, ry1, rx2, ry2 = region
    w, h = rx2 - rx1, ry2 - ry1
    x1, y1, x2, y2 = box
    values = (rx1 + x1 * w / 1000, ry1 + y1 * h / 1000, rx1 + x2 * w / 1000, ry1 + y2 * h / 1000)
    return tuple(min(999, max(0, round(v))) for v in values)  # type: ignore[return-value]


def _format_box(box: Box) -> str:
    return f"<box>({box[0]},{box[1]}),({box[2]},{box[3]})</box>"


def _side(box: Box) -> int:
    return max(box[2] - box[0], box[3] - box[1])


class ZoomRefineBackend(ModelBackend):
    """Wraps another backend; answers about small regions get a second, zoomed look (see the module doc).

    :param inner: the backend that does the generating (used for both looks).
    :param max_side: boxes whose longer side is at least this ([0,1000) units) are left alone.
    :param factor: the zoom region is this many times the box's longer side …
    :param min_side: … and at least this wide and high.
    """

    def __init__(self, inner: ModelBackend, max_side: int = 150, factor: float = 3.0, min_side: int = 200):
        self.inner = inner
        self.name = inner.name
        self.max_side, self.factor, self.min_side = max_side, factor, min_side
        self.last_result: GenerationResult | None = None

    def __getattr__(self, attribute: str) -> Any:
        # model, tokenizer, ... of a local backend stay reachable through the wrapper
        if attribute == "inner":
            raise AttributeError(attribute)
        return getattr(self.inner, attribute)

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    # -- the two kinds of second look ---------------------------------------------------------------------

    def region_request(self, request: GenerationRequest) -> GenerationRequest | None:
        """The request to send instead of ``request`` when it asks about one small box (else None)."""
        if request.query is None or request.stop:
            return None
        question = request.query.rsplit("</img>", 1)[-1]
        boxes = list(_QUESTION_BOX.finditer(question))
        if len(boxes) != 1:
            return None
        box: Box = tuple(int(v) for v in boxes[0].groups())  # type: ignore[assignment]
        if _side(box) >= self.max_side:
            return None
        picture = self._picture(request)
        if picture is None:
            return None
        region = zoom_region(box, self.factor, self.min_side)
        rewritten = question.replace(boxes[0].group(0), _format_box(into_region(box, region)), 1)
        return self._zoom_request(request, picture, region, _IN_PICTURE.sub("", rewritten).strip())

    def refine_answer(self, request: GenerationRequest, text: str) -> str:
        """``text`` with each small labelled box located again on a zoomed crop."""
        if request.query is None or request.stop or _BOX_START not in text:
            return text
        picture = self._picture(request)
        if picture is None:
            return text

        def refine(match: re.Match[str]) -> str:
            box: Box = tuple(int(v) for v in match.groups()[1:])  # type: ignore[assignment]
            if not 0 < _side(box) < self.max_side:
                return match.group(0)
            label = match.group("label")
            region = zoom_region(box, self.factor, self.min_side)
            question = f"Find {_IN_PICTURE.sub('', label).strip()}."
            again = _QUESTION_BOX.search(
                self.inner.generate(self._zoom_request(request, picture, region, question)).text
            )
            if again is None:
                return match.group(0)
            found: Box = tuple(int(v) for v in again.groups())  # type: ignore[assignment]
            return f"<ref>{label}</ref>{_format_box(out_of_region(found, region))}"

        return _ANSWER_BOX.sub(refine, text)

    # -- ModelBackend -------------------------------------------------------------------------------------

    def generate(self, request: GenerationRequest) -> GenerationResult:
        zoomed = self.region_request(request)
        if zoomed is not None:
            result = self.inner.generate(zoomed)
        else:
            result = self.inner.generate(request)
            result = result.model_copy(update={"text": self.refine_answer(request, result.text)})
        self.last_result = result
        return result

    def stream(self, request: GenerationRequest, stop_event: threading.Event | None = None) -> Iterator[str]:
        """Yield text deltas; the text from the first ``<box>`` on comes once its boxes are refined."""
        zoomed = self.region_request(request)
        chunks = self._inner_stream(zoomed or request, stop_event)
        text, emitted = "", ""
        # closing: a consumer that stops early (a client gone) stops the inner generation too
        with contextlib.closing(chunks):  # type: ignore[type-var]
            while True:
                try:
                    text += next(chunks)
                except StopIteration as stop:
                    result = stop.value
                    break
                ready = text if zoomed is not None else _before_box(text)
                if len(ready) > len(emitted):
                    yield ready[len(emitted) :]
                    emitted = ready
        final = text if zoomed is not None else self.refine_answer(request, text)
        if final.startswith(emitted) and len(final) > len(emitted):
            yield final[len(emitted) :]
        if not isinstance(result, GenerationResult):
            result = getattr(self.inner, "last_result", None) or GenerationResult(text=final)
        result = result.model_copy(update={"text": final})
        self.last_result = result
        return result

    # -- helpers ------------------------------------------------------------------------------------------

    def _inner_stream(self, request: GenerationRequest, stop_event: threading.Event | None) -> Iterator[str]:
        if stop_event is None:
            return self.inner.stream(request)
        return self.inner.stream(request, stop_event=stop_event)  # type: ignore[call-arg]

    def _zoom_request(
        self, request: GenerationRequest, picture: Image.Image, region: Box, question: str
    ) -> GenerationRequest:
        from qvl_agent.data.react_samples import crop_zoom

        crop = crop_zoom(picture, list(region), picture.size)
        return request.model_copy(
            update={"history": [], "query": f"Picture 1: <img>zoom.png</img>\n{question}", "images": [crop]}
        )

    def _picture(self, request: GenerationRequest) -> Image.Image | None:
        """The picture ``request``'s question is about, when it can be had without fetching anything."""
        texts = [t for turn in request.history for t in turn] + [request.query or ""]
        references = [r for t in texts for r in _IMG.findall(t)]
        if not references:
            return None
        index = picture_asked_about(request.query or "", len(references))
        named = re.fullmatch(r"image-(\d+)", references[index].strip())
        if named and 1 <= int(named.group(1)) <= len(request.images):
            picture = request.images[int(named.group(1)) - 1]
        elif len(request.images) == len(references):
            picture = request.images[index]
        else:
            return None
        return picture.convert("RGB") if isinstance(picture, Image.Image) else None


def _before_box(text: str) -> str:
    """The part of ``text`` that can be sent before boxes are refined: up to the first ``<box>`` (or a
    trailing piece that may be its beginning), held back as the backends hold back stop strings."""
    start = _find_stop(text, [_BOX_START])
    return text[:start] if start is not None else _safe_prefix(text, [_BOX_START])
