"""The console's logic without a browser: agent events -> chat messages, boxes drawn, errors as messages."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from qvl_agent.console.annotate import annotate_pictures, box_pixels, draw_boxes
from qvl_agent.console.catalogue import load_catalogue
from qvl_agent.console.engine import ModelCache, Settings, Turn, answer_markdown, chat_history, run_turn
from qvl_agent.messages import Box

SHAPES = str(Path(__file__).resolve().parents[2] / "qvl_agent" / "console" / "examples" / "shapes.png")


def run(turns: list[Turn], tmp_path: Path, **settings) -> list:
    options = {"model": "scripted-test", "tools": ["pixel_colour", "broken_tool", "thumbnail"], **settings}
    return list(run_turn(turns, Settings(**options), ModelCache(), tmp_path))


def run_turn_live(turns: list[Turn], tmp_path: Path):
    """Like ``run`` but lazily, so each update can be looked at before the next one changes the turn."""
    return run_turn(turns, Settings(model="scripted-test"), ModelCache(), tmp_path)


def titles(turn: Turn) -> list[str]:
    return [m["metadata"]["title"] for m in turn.shown if m.get("metadata")]


def test_answer_markdown_renders_refs_and_boxes():
    text = "The <ref>red circle</ref><box>(93,109),(289,304)</box> and a <box>(1,2),(3,4)</box>."
    assert answer_markdown(text) == "The **red circle** `[93, 109, 289, 304]` and a `[1, 2, 3, 4]`."
    assert answer_markdown("<ref>a <b></ref>") == "**a &lt;b&gt;**"


def test_box_pixels_scales_norm_or_uses_pixels():
    assert box_pixels(Box(norm=[0, 500, 500, 1000]), (200, 100)) == [0, 50, 100, 100]
    assert box_pixels(Box(norm=[0, 0, 1, 1], pixels=[1.0, 2.0, 3.0, 4.0]), (200, 100)) == [1, 2, 3, 4]


def test_draw_boxes_outlines_the_region_and_keeps_the_original():
    image = Image.new("RGB", (200, 100), (255, 255, 255))
    out = draw_boxes(image, [Box(label="thing", norm=[250, 500, 750, 900])])
    assert image.getpixel((50, 50)) == (255, 255, 255)  # original untouched
    assert out.getpixel((50, 70)) != (255, 255, 255)  # left edge of the box at x=50
    assert out.getpixel((100, 70)) == (255, 255, 255)  # inside stays clear
    assert out.getpixel((20, 20)) == (255, 255, 255)  # far outside stays clear


def test_annotate_pictures_uses_image_index_and_defaults_to_latest():
    a, b = Image.new("RGB", (64, 64), "white"), Image.new("RGB", (32, 32), "white")
    drawn = annotate_pictures([a, b], [Box(norm=[0, 0, 500, 500], image_index=0), Box(norm=[0, 0, 999, 999])])
    assert [index for index, _ in drawn] == [0, 1]
    assert drawn[0][1].size == (64, 64) and drawn[1][1].size == (32, 32)


def test_catalogue_lists_tools_by_plugin(console_plugin):
    catalogue = load_catalogue()
    assert set(catalogue.tools) == {"pixel_colour", "broken_tool", "thumbnail"}
    (entry,) = catalogue.tool_plugins
    assert entry.name == "console-test" and sorted(entry.tools) == [
        "broken_tool",
        "pixel_colour",
        "thumbnail",
    ]
    assert catalogue.tools_of([]) == [] and set(catalogue.tools_of(["console-test"])) == set(catalogue.tools)
    assert "scripted-test" in catalogue.models


def test_tool_call_then_grounded_answer(console_plugin, tmp_path):
    turn = Turn(text="Where is the red circle?", files=[SHAPES])
    updates = run([turn], tmp_path)
    assert updates[-1].done
    # the tool really ran on the picture: the red circle's centre pixel is red
    (step,) = [m for m in turn.shown if m.get("metadata")]
    assert step["metadata"]["title"] == "✓ Tool `pixel_colour` used"
    assert step["metadata"]["status"] == "done"
    assert '"x": 190' in step["content"] and "rgb(220, 40, 40)" in step["content"]
    assert "check the colour" in step["content"]  # the thought
    # the final answer, rendered, and what later turns will see
    assert turn.answer == "The <ref>red circle</ref><box>(93,109),(289,304)</box> is at the top left."
    assert any(
        m["content"] == "The **red circle** `[93, 109, 289, 304]` is at the top left." for m in turn.shown
    )
    # the annotated picture: red circle's box drawn on shapes.png, same size as the original
    (annotated,) = turn.annotated
    assert updates[-1].annotated == annotated
    drawn, original = Image.open(annotated).convert("RGB"), Image.open(SHAPES).convert("RGB")
    assert drawn.size == original.size
    # the box's bottom-right corner is background on the original (the circle is round) and outlined now
    corner = tuple(int(v * 256 / 1000) for v in console_plugin.RED_CIRCLE_NORM[2:])
    assert original.getpixel(corner) == (250, 250, 250) and drawn.getpixel(corner) != (250, 250, 250)
    assert drawn.getpixel((230, 240)) == original.getpixel((230, 240))  # far from the box: untouched
    # the chat shows: user (image + text), the tool step, the answer, the annotated picture
    history = chat_history([turn])
    assert history[0] == {"role": "user", "content": [{"path": SHAPES}, "Where is the red circle?"]}
    assert history[-1]["content"][1]["path"] == annotated


def test_streaming_shows_text_while_generating(console_plugin, tmp_path):
    console_plugin.backend.replies = ["A plain answer without tools, streamed in small chunks."]
    turn = Turn(text="hello")
    contents = [str(u.turn.shown[0]["content"]) for u in run_turn_live([turn], tmp_path) if u.turn.shown]
    assert len(set(contents)) > 3  # it grew chunk by chunk
    assert turn.answer == "A plain answer without tools, streamed in small chunks."


def test_tool_failure_is_shown_and_the_agent_goes_on(console_plugin, tmp_path):
    console_plugin.backend.replies = [
        'Thought: try it\nAction: broken_tool\nAction Input: {"n": 3}\nObservation:',
        "Thought: I now know the final answer\nFinal Answer: The tool failed, sorry.",
    ]
    turn = Turn(text="use the broken tool", files=[SHAPES])
    run([turn], tmp_path)
    assert titles(turn) == ["✗ Tool `broken_tool` failed"]
    assert "the broken tool broke on 3" in turn.shown[0]["content"]
    assert turn.answer == "The tool failed, sorry."


def test_tool_images_are_shown_inline(console_plugin, tmp_path):
    console_plugin.backend.replies = [
        'Thought: shrink\nAction: thumbnail\nAction Input: {"size": 40}\nObservation:',
        "Thought: I now know the final answer\nFinal Answer: done",
    ]
    turn = Turn(text="shrink it", files=[SHAPES])
    run([turn], tmp_path)
    (path,) = turn.tool_images
    assert Image.open(path).size == (40, 40)
    assert {"path": path, "alt_text": "thumbnail"} in [
        c for m in turn.shown if isinstance(m["content"], list) for c in m["content"]
    ]


def test_bad_image_is_an_error_message(console_plugin, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"this is not a png")
    turn = Turn(text="what is this?", files=[str(bad)])
    updates = run([turn], tmp_path)
    assert updates[-1].done and turn.answer is None
    (message,) = turn.shown
    assert "Could not read an image" in message["content"] and "broken.png" in message["content"]
    assert console_plugin.backend.requests == []  # the model was never called


def test_model_failure_is_an_error_message(console_plugin, tmp_path):
    def explode(request):
        raise RuntimeError("out of memory (simulated)")

    console_plugin.backend.replies = [explode]
    turn = Turn(text="hi")
    run([turn], tmp_path)
    assert "The model failed" in turn.shown[-1]["content"] and "out of memory" in turn.shown[-1]["content"]


def test_unknown_model_is_an_error_message(console_plugin, tmp_path):
    turn = Turn(text="hi")
    run([turn], tmp_path, model="no-such-model")
    assert (
        "Could not start the model" in turn.shown[-1]["content"]
        and "no-such-model" in turn.shown[-1]["content"]
    )


def test_step_budget_exhausted_is_reported(console_plugin, tmp_path):
    console_plugin.backend.replies = [console_plugin.TOOL_CALL]  # the model never stops calling the tool
    turn = Turn(text="loop", files=[SHAPES])
    run([turn], tmp_path, max_steps=2)
    assert turn.answer is None
    assert all(m["metadata"]["status"] == "done" for m in turn.shown if m.get("metadata"))
    assert "No final answer" in turn.shown[-1]["content"]


def test_later_turns_see_earlier_answers_and_pictures(console_plugin, tmp_path):
    console_plugin.backend.replies = ["Thought: I now know the final answer\nFinal Answer: first answer"]
    first = Turn(text="first question", files=[SHAPES])
    run([first], tmp_path, tools=[])
    second = Turn(text="second question")
    run([first, second], tmp_path, tools=[])
    request = console_plugin.backend.requests[-1]
    assert len(request.images) == 1  # the first turn's picture is still in the conversation
    assert "first answer" in str(request.history) and "second question" in request.query
    assert console_plugin.backend.requests[-1].temperature == 0.0


def test_settings_reach_the_model(console_plugin, tmp_path):
    console_plugin.backend.replies = [console_plugin.GROUNDED_ANSWER]
    run([Turn(text="q")], tmp_path, tools=[], temperature=0.7, top_p=0.5, max_tokens=64, system="Be brief.")
    request = console_plugin.backend.requests[-1]
    assert (request.temperature, request.top_p, request.max_new_tokens) == (0.7, 0.5, 64)
    assert "Be brief." in request.system + str(request.query)


@pytest.mark.testdata
def test_a_real_checkpoint_streams_through_the_console(console_plugin, tiny_checkpoint, tmp_path):
    """The tiny reference checkpoint (random weights, real architecture), resolved by its folder path."""
    turn = Turn(text="Describe the image.", files=[SHAPES])
    settings = Settings(model=str(tiny_checkpoint), tools=["pixel_colour"], max_tokens=6, max_steps=1)
    updates = list(run_turn([turn], settings, ModelCache(), tmp_path))
    assert updates[-1].done
    errors = [str(m["content"]) for m in turn.shown if str(m["content"]).startswith("⚠")]
    assert turn.shown and len(updates) > 2  # text streamed in as it was generated
    # random weights may or may not write a ReAct action; either way the turn ends cleanly, with the model's
    # text as the answer or the step limit reported, never a load or generation failure
    assert turn.answer is not None or [e.split("\n")[0] for e in errors] == ["⚠ **No final answer**"]
    assert turn.answer is None or not errors


def test_the_pickers_models_get_the_consoles_device_and_dtype(console_plugin):
    """``console --device cpu --dtype bf16``: a local model picked later is loaded that way too; a remote one,
    which takes no placement, is still offered."""
    import torch

    models = ModelCache(options={"device": "cpu", "dtype": "bf16"})
    demo = models.get("demo")
    assert demo.model.device.type == "cpu" and demo.model.dtype == torch.bfloat16
    assert models.get("openai+http://127.0.0.1:9/v1").name == "upstream@127.0.0.1:9"
    assert models.names() == ["demo", "openai+http://127.0.0.1:9/v1"]
