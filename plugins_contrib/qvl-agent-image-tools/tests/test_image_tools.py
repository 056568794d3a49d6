"""Tests of the image tools: box geometry, zoom/info/draw on real pictures, errors the model can read."""

from __future__ import annotations

import json

import numpy as np
import pytest
import qvl_agent_image_tools as it
from PIL import Image, ImageDraw

from qvl_agent.agent import tool_context


def scene() -> Image.Image:
    """A 200x100 white picture with a small red square at pixels (150..160, 20..30)."""
    image = Image.new("RGB", (200, 100), "white")
    ImageDraw.Draw(image).rectangle((150, 20, 159, 29), fill=(255, 0, 0))
    return image


def red_fraction(image: Image.Image) -> float:
    a = np.asarray(image.convert("RGB")).astype(int)
    return float(((a[..., 0] > 200) & (a[..., 1] < 60) & (a[..., 2] < 60)).mean())


def test_box_to_pixels_maps_normalised_coordinates() -> None:
    assert it.box_to_pixels([0, 0, 1000, 1000], (200, 100)) == (0, 0, 200, 100)
    assert it.box_to_pixels([750, 200, 800, 300], (200, 100)) == (150, 20, 160, 30)
    # a degenerate-but-valid tiny box is still at least one pixel
    assert it.box_to_pixels([500, 500, 501, 501], (10, 10)) == (5, 5, 6, 6)


@pytest.mark.parametrize("box", [[10, 10, 10, 20], [30, 10, 20, 20], [1, 2, 3]])
def test_box_to_pixels_rejects_empty_or_malformed_boxes(box: list[int]) -> None:
    with pytest.raises(it.ImageToolError):
        it.box_to_pixels(box, (100, 100))


def test_zoom_returns_the_enlarged_region() -> None:
    with tool_context([scene()]):
        result = it.zoom(image=1, box=[740, 150, 810, 350])
    (crop,) = result.images
    assert max(crop.size) >= it.MIN_ZOOM_SIDE
    # the crop covers pixels 148..162 x 15..35: the red square fills a large part of it
    assert red_fraction(crop) > 0.25
    assert red_fraction(scene()) < 0.01
    assert result.data["pixels"] == [148, 15, 162, 35]
    # aspect ratio of the region is kept (14 x 20 pixels)
    assert abs(crop.width / crop.height - 14 / 20) < 0.02


def test_zoom_on_a_region_without_the_square_has_no_red() -> None:
    with tool_context([scene()]):
        result = it.zoom(image=1, box=[0, 500, 300, 1000])
    assert red_fraction(result.images[0]) == 0


def test_pictures_are_numbered_from_one() -> None:
    blue = Image.new("RGB", (50, 50), "blue")
    with tool_context([scene(), blue]):
        info = json.loads(it.image_info(image=2))
        assert info == {"image": 2, "width": 50, "height": 50, "mode": "RGB", "mean_rgb": [0, 0, 255]}
        with pytest.raises(it.ImageToolError, match="no Picture 3; the conversation has 2"):
            it.image_info(image=3)


def test_no_pictures_outside_a_conversation() -> None:
    with pytest.raises(it.ImageToolError, match="no picture"):
        it.zoom(image=1, box=[0, 0, 500, 500])


def test_draw_outlines_the_box() -> None:
    with tool_context([Image.new("RGB", (100, 100), "white")]):
        result = it.draw(image=1, boxes=[{"box": [200, 200, 600, 600], "label": "thing"}], color="blue")
    (annotated,) = result.images
    assert annotated.getpixel((20, 40)) == (0, 0, 255)  # left edge of the box
    assert annotated.getpixel((40, 40)) == (255, 255, 255)  # inside stays untouched
    with tool_context([Image.new("RGB", (100, 100), "white")]):
        with pytest.raises(it.ImageToolError, match="colour"):
            it.draw(image=1, boxes=[{"box": [0, 0, 10, 10]}], color="not-a-colour")


def test_tools_validate_arguments_before_running() -> None:
    tools = {t.name: t for t in it.make_tools()}
    assert set(tools) == {"zoom", "image_info", "draw"}
    bad = tools["zoom"].run({"image": 1, "box": [0, 0, 2000, 10]})
    assert bad.is_error and "2000" in bad.content
    short = tools["zoom"].run('{"image": 1, "box": [0, 0, 10]}')
    assert short.is_error and "box" in short.content
    zero = tools["image_info"].run({"image": 0})
    assert zero.is_error and "minimum" in zero.content
    # valid arguments but no conversation: the tool's own error comes back as an observation
    nopic = tools["zoom"].run({"image": 1, "box": [0, 0, 10, 10]})
    assert nopic.is_error and "no picture" in nopic.content


def test_register_tools_hook() -> None:
    registered = []
    it.register_tools(registered.append)
    assert [t.name for t in registered] == ["zoom", "image_info", "draw"]
