"""Zoom refinement (``qvl_agent.zoom_refine``): the geometry, and the wrapper around a backend that really
reads pixels but only coarsely — so a second look on a crop is what makes its boxes and answers right."""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Iterator

import pytest
from PIL import Image, ImageDraw

from qvl_agent.backends import ModelBackend
from qvl_agent.messages import GenerationRequest, GenerationResult
from qvl_agent.plugins.grounding import picture_asked_about
from qvl_agent.training.metrics import extract_boxes, iou
from qvl_agent.zoom_refine import ZoomRefineBackend, into_region, out_of_region, zoom_region

COLOURS = {"red": (220, 40, 40), "blue": (40, 80, 220)}
GRID = 100  # the coarse backend writes coordinates to multiples of this


class CoarseEyes(ModelBackend):
    """Finds a named colour in the (last) picture, writing its box on a coarse 100-unit grid; says which
    colour is at the centre of a given box and how many pixels wide it is there. Records its requests."""

    name = "coarse"

    def __init__(self) -> None:
        self.requests: list[GenerationRequest] = []

    def _answer(self, request: GenerationRequest) -> str:
        query = request.query if request.query is not None else request.history[-1][0]
        picture = request.images[picture_asked_about(query, len(request.images))]
        asked = re.search(r"Find (the (\w+) \w+)", query)
        if asked:
            box = _colour_box(picture, COLOURS[asked.group(2)])
            coarse = [math.floor(box[0] / GRID) * GRID, math.floor(box[1] / GRID) * GRID]
            coarse += [min(999, math.ceil(box[2] / GRID) * GRID), min(999, math.ceil(box[3] / GRID) * GRID)]
            return (
                f"<ref>{asked.group(1)}</ref><box>({coarse[0]},{coarse[1]}),({coarse[2]},{coarse[3]})</box>"
            )
        region = extract_boxes(query)
        if region:
            return _describe(picture, region[0][1])
        return "nothing asked"

    def generate(self, request: GenerationRequest) -> GenerationResult:
        self.requests.append(request)
        return GenerationResult(text=self._answer(request), prompt_tokens=7, completion_tokens=3)

    def stream(self, request: GenerationRequest) -> Iterator[str]:
        result = self.generate(request)
        for k in range(0, len(result.text), 5):
            yield result.text[k : k + 5]
        return result


def _colour_box(picture: Image.Image, colour: tuple[int, int, int]) -> tuple[float, float, float, float]:
    w, h = picture.size
    xs, ys = [], []
    pixels = picture.load()
    for y in range(h):
        for x in range(w):
            if _near(pixels[x, y], colour):
                xs.append(x)
                ys.append(y)
    return (min(xs) * 1000 / w, min(ys) * 1000 / h, (max(xs) + 1) * 1000 / w, (max(ys) + 1) * 1000 / h)


def _near(pixel: tuple[int, int, int], colour: tuple[int, int, int]) -> bool:
    return sum(abs(a - b) for a, b in zip(pixel, colour, strict=True)) < 60


def _describe(picture: Image.Image, box: tuple[int, int, int, int]) -> str:
    w, h = picture.size
    x, y = (box[0] + box[2]) * w // 2000, (box[1] + box[3]) * h // 2000
    colour = next((n for n, c in COLOURS.items() if _near(picture.getpixel((x, y)), c)), None)
    if colour is None:
        return "nothing"
    wide = sum(_near(picture.getpixel((k, y)), COLOURS[colour]) for k in range(w))
    return f"a {colour} thing {wide} px wide"


def _scene() -> Image.Image:
    """256 px: a tiny red square (12 px) and a large blue one."""
    picture = Image.new("RGB", (256, 256), (250, 250, 250))
    draw = ImageDraw.Draw(picture)
    draw.rectangle((133, 57, 144, 68), fill=COLOURS["red"])
    draw.rectangle((20, 150, 100, 230), fill=COLOURS["blue"])
    return picture


RED = (520, 223, 566, 270)  # the tiny red square's box in [0,1000) units
BLUE = (78, 586, 395, 902)


def _ask(query: str, pictures: int = 1, **fields) -> GenerationRequest:
    header = "".join(f"Picture {k}: <img>image-{k}</img>\n" for k in range(1, pictures + 1))
    return GenerationRequest(query=header + query, images=[_scene() for _ in range(pictures)], **fields)


def test_zoom_region_is_a_square_three_boxes_wide_at_least_a_fifth_and_inside_the_picture():
    assert zoom_region((450, 450, 550, 550)) == (350, 350, 650, 650)
    assert zoom_region((490, 490, 510, 510)) == (400, 400, 600, 600)  # at least min_side
    assert zoom_region((0, 960, 30, 990)) == (0, 800, 200, 1000)  # moved inside, still square
    assert zoom_region((100, 100, 500, 500)) == (0, 0, 1000, 1000)  # never more than the picture
    assert zoom_region((450, 450, 550, 550), factor=2, min_side=50) == (400, 400, 600, 600)


def test_boxes_go_into_a_region_and_back():
    region = (350, 350, 650, 650)
    assert into_region((450, 450, 550, 550), region) == (333, 333, 667, 667)
    assert out_of_region((333, 333, 667, 667), region) == (450, 450, 550, 550)
    assert into_region((100, 360, 900, 640), region) == (0, 33, 999, 967)  # clipped to the crop


def test_a_small_box_in_an_answer_is_placed_again_on_a_zoomed_crop():
    inner = CoarseEyes()
    plain = inner.generate(_ask("Find the red square."))
    assert extract_boxes(plain.text)[0][1] == (500, 200, 600, 300)
    assert iou((500, 200, 600, 300), RED) < 0.5  # the coarse look alone misses

    refined = ZoomRefineBackend(inner).generate(_ask("Find the red square."))
    ((label, box),) = extract_boxes(refined.text)
    assert label == "the red square"
    # the crop is 300 units wide, so the 100-unit grid is 30 units there
    assert box == (520, 220, 580, 280) and iou(box, RED) >= 0.6, refined.text
    second = inner.requests[-1]
    assert second.history == [] and second.query.endswith("\nFind the red square.")
    assert second.images[0].size == (256, 256)  # the crop, enlarged to the picture's size


def test_large_boxes_tool_prompts_and_completions_are_left_alone():
    inner = CoarseEyes()
    backend = ZoomRefineBackend(inner)
    big = backend.generate(_ask("Find the blue square."))
    assert big.text == inner.generate(_ask("Find the blue square.")).text
    for request in (
        _ask("Find the red square.", stop=["Observation:"]),
        GenerationRequest(
            history=[("Picture 1: <img>image-1</img>\nFind the red square.", "It is")],
            query=None,
            images=[_scene()],
        ),
    ):
        before = len(inner.requests)
        assert backend.generate(request).text.endswith("<box>(500,200),(600,300)</box>")  # the coarse box
        assert len(inner.requests) == before + 1  # one look only


def test_the_named_picture_is_the_one_cropped():
    inner = CoarseEyes()
    request = _ask("Find the red square in Picture 1.", pictures=2)
    request.images[1] = Image.new("RGB", (256, 256), (250, 250, 250))  # Picture 2 holds nothing red
    text = ZoomRefineBackend(inner).generate(request).text
    assert extract_boxes(text)[0][1] == (520, 220, 580, 280)
    assert inner.requests[-1].query.endswith("\nFind the red square.")  # "in Picture 1" is gone on the crop


def test_a_question_about_a_small_box_is_asked_about_the_crop():
    inner = CoarseEyes()
    question = "What is in <box>(510,210),(580,280)</box>?"
    assert inner.generate(_ask(question)).text == "a red thing 12 px wide"
    result = ZoomRefineBackend(inner).generate(_ask(question))
    region = zoom_region((510, 210, 580, 280))
    assert region == (440, 140, 650, 350)
    # the crop (54 px of the picture) is enlarged to 256 px: the 12 px square is 57 px wide there
    colour, wide = re.fullmatch(r"a (\w+) thing (\d+) px wide", result.text).groups()
    assert colour == "red" and 52 <= int(wide) <= 62, result.text
    sent = inner.requests[-1]
    assert len(sent.images) == 1 and sent.history == []
    assert (
        extract_boxes(sent.query)[0][1] == into_region((510, 210, 580, 280), region) == (333, 333, 667, 667)
    )


def test_streaming_gives_the_refined_text_and_sends_the_words_before_the_box_first():
    class Talkative(CoarseEyes):
        def _answer(self, request):
            return "It is here: " + super()._answer(request)

    inner = Talkative()
    backend = ZoomRefineBackend(inner)
    whole = backend.generate(_ask("Find the red square.")).text
    chunks = backend.stream(_ask("Find the red square."), stop_event=None)
    first = next(chunks)
    assert (
        "It is here: ".startswith(first) and len(inner.requests) == 3
    )  # one look so far (plus generate's two)
    rest = list(chunks)
    assert first + "".join(rest) == whole and "<box>" not in first
    assert backend.last_result is not None and backend.last_result.text == whole


def test_stream_passes_a_stop_event_to_backends_that_take_one():
    seen = {}

    class Stoppable(CoarseEyes):
        def stream(self, request, stop_event=None):
            seen["stop_event"] = stop_event
            return (yield from super().stream(request))

    event = threading.Event()
    assert "".join(ZoomRefineBackend(Stoppable()).stream(_ask("Find the blue square."), stop_event=event))
    assert seen["stop_event"] is event


def test_the_wrapper_shows_the_inner_backends_name_and_attributes():
    inner = CoarseEyes()
    inner.tokenizer = "tok"
    backend = ZoomRefineBackend(inner)
    assert backend.name == "coarse" and backend.tokenizer == "tok"
    with pytest.raises(AttributeError):
        backend.not_there  # noqa: B018


def test_closing_the_stream_early_closes_the_inner_one():
    closed = []

    class Slow(CoarseEyes):
        def stream(self, request):
            try:
                yield from ["It ", "is ", "here"]
            finally:
                closed.append(True)

    chunks = ZoomRefineBackend(Slow()).stream(_ask("Find the red square."))
    assert next(chunks) == "It "
    chunks.close()
    assert closed == [True]


def test_bench_zoom_refine_prints_both_backends_and_the_ratio(
    monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """Smoke test of ``benchmarks/bench_zoom_refine.py`` on the shipped weights (not a timing test)."""
    import runpy
    import sys
    from pathlib import Path

    from qvl_agent.model.loading import demo_checkpoint_dir

    if not (demo_checkpoint_dir() / "model.safetensors").is_file():
        pytest.skip("no demo weights in qvl_agent/assets/demo")
    bench = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_zoom_refine.py"
    monkeypatch.setattr(sys, "argv", [str(bench), "--conversations", "3"])
    runpy.run_path(str(bench), run_name="__main__")
    lines = capsys.readouterr().out.splitlines()
    rows = {
        line.split()[0]: line.split()[1:] for line in lines if line.split()[:1] in (["demo"], ["demo-plain"])
    }
    assert set(rows) == {"demo", "demo-plain"}
    assert all(float(v) >= 0 for row in rows.values() for v in row) and float(rows["demo"][0]) > 0
    assert re.fullmatch(r"time ratio demo / demo-plain: \d+\.\d\dx", lines[-1])
