"""Grounding boxes (parse_boxes, the postprocess hook) and the built-in output formats."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from qvl_agent import plugins
from qvl_agent.messages import AgentResponse, AgentStep, Box
from qvl_agent.model.errors import InputError
from qvl_agent.plugins.grounding import parse_boxes, strip_grounding

# the original labels only the box right after a <ref>; we label boxes that directly follow it too
DEVIATES = {"<ref> a cat </ref><box>(100,200),(300,400)</box><box>(500,600),(700,800)</box>"}


@pytest.mark.testdata
def test_box_vectors_of_the_original(qwen_vl_testdata):
    vectors = json.loads((qwen_vl_testdata / "tokenizer_vectors.json").read_text())["fetch_all_box_with_ref"]
    checked = 0
    for case in vectors:
        boxes = [b for b in parse_boxes(case["input"]) if not b.quad]
        if "exception" in case:
            assert boxes == []  # malformed boxes are skipped, never raised on
            continue
        got = [{"box": b.norm, **({"ref": b.label} if b.label is not None else {})} for b in boxes]
        if case["input"] in DEVIATES:
            assert got[1]["ref"] == got[0]["ref"] == "a cat"
            got[1].pop("ref")
        assert got == [
            {"box": list(c["box"]), **({"ref": c["ref"]} if "ref" in c else {})} for c in case["boxes"]
        ]
        checked += 1
    assert checked == 10


def test_pixels_refer_to_the_latest_picture():
    sizes = [(100, 50), (200, 400)]
    (box,) = parse_boxes("<ref>cat</ref><box>(100,200),(500,1000)</box>", sizes)
    assert box.image_index == 1 and box.pixels == [20.0, 80.0, 100.0, 400.0]
    # pictures introduced inside the text are the last ones of the conversation
    text = "<box>(0,0),(10,10)</box> Picture 2: <img>b.png</img>\n<box>(500,500),(1000,1000)</box>"
    first, second = parse_boxes(text, sizes)
    assert (first.image_index, first.pixels) == (0, [0.0, 0.0, 1.0, 0.5])
    assert (second.image_index, second.pixels) == (1, [100.0, 200.0, 200.0, 400.0])
    # pinned picture
    (pinned,) = parse_boxes("<box>(0,0),(500,500)</box>", sizes, image_index=0)
    assert pinned.pixels == [0.0, 0.0, 50.0, 25.0]
    # without pictures: normalised coordinates only
    (bare,) = parse_boxes("<box>(1,2),(3,4)</box>")
    assert bare.pixels is None and bare.image_index is None


def test_quads_and_malformed_input():
    (quad,) = parse_boxes("<ref>sign</ref><quad>(0,0),(1000,0),(1000,500),(0,500)</quad>", [(10, 10)])
    assert quad.quad and quad.label == "sign" and quad.pixels == [0, 0, 10, 0, 10, 5, 0, 5]
    for text in [
        "<box>(1,2),(3)</box>",
        "<box>(a,b),(c,d)</box>",
        "<ref>unclosed",
        "<box>(1,2),(3,4)",
        None,
        "",
    ]:
        assert parse_boxes(text, [(10, 10)]) == []


def test_strip_grounding_like_the_original_clean_regex():
    assert strip_grounding("The <ref>dog</ref><box>(1,2),(3,4)</box> runs") == "The dog runs"
    assert strip_grounding("cut <box>(1,2),(3") == "cut "
    assert strip_grounding("<quad>(1,2),(3,4),(5,6),(7,8)</quad>x") == "x"


def response_with_boxes() -> AgentResponse:
    picture = Image.new("RGB", (200, 100), "white")
    return AgentResponse(
        text="Found <ref>the ball</ref><box>(100,200),(500,800)</box>.",
        images=[Image.new("RGB", (10, 10)), picture],
        steps=[
            AgentStep(thought="look", tool="zoom", arguments='{"box": [1,2,3,4]}', observation="[image 5x5]")
        ],
    )


def test_postprocess_hook_fills_boxes(pm):
    response = plugins.postprocess(response_with_boxes())
    assert response.boxes == [
        Box(label="the ball", norm=[100, 200, 500, 800], pixels=[20.0, 20.0, 100.0, 80.0], image_index=1)
    ]
    pinned = plugins.postprocess(response_with_boxes(), {"image_index": 0})
    assert pinned.boxes[0].image_index == 0 and pinned.boxes[0].pixels == [1.0, 2.0, 5.0, 8.0]


def test_text_markdown_json(pm):
    response = plugins.postprocess(response_with_boxes())
    assert plugins.format_output(response, "text") == "Found the ball."
    markdown = plugins.format_output(response, "markdown")
    assert markdown.startswith("Found the ball.")
    assert '1. `zoom({"box": [1,2,3,4]})`' in markdown
    assert "| 1 | the ball | 100, 200, 500, 800 | 20, 20, 100, 80 | 2 |" in markdown
    data = json.loads(plugins.format_output(response, "json"))
    assert data["clean_text"] == "Found the ball." and data["text"] == response.text
    assert data["boxes"][0]["pixels"] == [20.0, 20.0, 100.0, 80.0]
    assert data["image_sizes"] == [[10, 10], [200, 100]]
    assert data["steps"][0]["tool"] == "zoom"


def test_annotated_image(pm):
    response = plugins.postprocess(response_with_boxes())
    annotated = plugins.format_output(response, "image")
    assert annotated.size == (200, 100) and annotated is not response.images[1]
    assert response.images[1].getpixel((60, 80)) == (255, 255, 255)  # the original is untouched
    assert annotated.getpixel((60, 80)) != (255, 255, 255)  # bottom edge of the box is drawn
    assert annotated.getpixel((60, 50)) == (255, 255, 255)  # inside stays clear
    with pytest.raises(InputError, match="no picture"):
        plugins.format_output(AgentResponse(text="x"), "image")
