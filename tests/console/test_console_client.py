"""The console driven over its API by ``gradio_client``, on a real server bound to a free loopback port."""

from __future__ import annotations

from pathlib import Path

from gradio_client import Client, handle_file
from PIL import Image


def texts(message: dict) -> str:
    return "".join(c.get("text", "") for c in message["content"] if c.get("type") == "text")


def files(message: dict) -> list[str]:
    return [c["file"] for c in message["content"] if c.get("type") == "file"]


def test_turn_with_image_and_tool(live_console):
    url, plugin = live_console
    client = Client(url, verbose=False)
    shapes = str(plugin.EXAMPLES / "shapes.png")
    chat, textbox, annotated, download = client.predict(
        {"text": "Where is the red circle?", "files": [handle_file(shapes)]}, api_name="/chat"
    )

    user, step, answer, grounding = chat
    assert user["role"] == "user" and texts(user) == "Where is the red circle?"
    assert Image.open(files(user)[0]).size == (256, 256)  # the upload reached the server intact
    # the tool trace: a collapsible step with the call, the thought and the tool's real observation
    assert step["metadata"]["title"] == "✓ Tool `pixel_colour` used" and step["metadata"]["status"] == "done"
    assert "rgb(220, 40, 40)" in texts(step) and '"x": 190' in texts(step)
    # the answer, and the grounded picture with the box drawn, also offered for download
    assert texts(answer) == "The **red circle** `[93, 109, 289, 304]` is at the top left."
    assert "red circle" in texts(grounding)
    drawn = Image.open(files(grounding)[0]).convert("RGB")
    assert drawn.size == (256, 256)
    assert Image.open(annotated).convert("RGB").tobytes() == drawn.tobytes()
    assert download["visible"] and Path(download["value"]).read_bytes() == Path(annotated).read_bytes()
    # the model saw the picture and the tool's description
    first, second = plugin.backend.requests[:2]
    assert len(first.images) == 1 and "pixel_colour" in first.query
    assert "rgb(220, 40, 40)" in (second.query or "") + str(second.history)


def test_undo_regenerate_clear(live_console):
    url, plugin = live_console
    plugin.backend.replies = ["Thought: I now know the final answer\nFinal Answer: answer one", "answer two"]
    client = Client(url, verbose=False)
    chat, *_ = client.predict({"text": "question", "files": []}, api_name="/chat")
    assert [texts(m) for m in chat] == ["question", "answer one"]

    chat, *_ = client.predict(api_name="/regenerate")
    assert [texts(m) for m in chat] == ["question", "answer two"]
    assert plugin.backend.requests[-1].query == plugin.backend.requests[0].query  # same question again

    chat, textbox, *_ = client.predict(api_name="/undo")
    assert chat == [] and textbox["value"]["text"] == "question"  # the message is back in the input box

    client.predict({"text": "again", "files": []}, api_name="/chat")
    chat, textbox, annotated, _ = client.predict(api_name="/clear")
    assert chat == [] and annotated is None


def test_bad_image_is_reported_in_the_chat(live_console, tmp_path):
    url, plugin = live_console
    bad = tmp_path / "not-a-picture.png"
    bad.write_bytes(b"\x89PNG but not really")
    client = Client(url, verbose=False)
    chat, textbox, *_ = client.predict(
        {"text": "what is it?", "files": [handle_file(str(bad))]}, api_name="/chat"
    )
    assert "Could not read an image" in texts(chat[-1]) and "not-a-picture.png" in texts(chat[-1])
    assert textbox == {"interactive": True, "__type__": "update"}  # the input is usable again
    assert plugin.backend.requests == []
    # the console is not stuck: the next turn works
    plugin.backend.replies = ["fine"]
    chat, *_ = client.predict({"text": "and now?", "files": []}, api_name="/chat")
    assert texts(chat[-1]) == "fine"
