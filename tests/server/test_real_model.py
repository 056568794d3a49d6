"""The server in front of the real model core (tiny reference checkpoint, random weights)."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from PIL import Image

from qvl_agent import plugins
from qvl_agent.messages import GenerationRequest, ImagePart, Message, TextPart
from qvl_agent.prompting.chatml import make_context
from qvl_agent.server import create_app

pytestmark = pytest.mark.testdata


@pytest.fixture(scope="module")
def real_server(tiny_checkpoint: Path, running_server_class) -> Iterator[tuple[openai.OpenAI, object]]:
    previous = plugins.set_plugin_manager(plugins.create_plugin_manager(load_entry_points=False))
    try:
        backend = plugins.resolve_model(str(tiny_checkpoint))
        server = running_server_class(create_app(str(tiny_checkpoint), model_name="tiny")).start()
        try:
            yield openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=120), backend
        finally:
            server.stop()
    finally:
        plugins.set_plugin_manager(previous)


def _prompt_tokens(backend, messages: list[Message]) -> int:
    """Prompt length counted independently: the protocol's rendering through ``make_context``."""
    request = plugins.get_protocol("react").build_request(messages)
    _, tokens = make_context(backend.tokenizer, request.query, history=request.history, system=request.system)
    return len(tokens)


def test_real_model_chat_usage_and_parity_with_direct_generate(real_server):
    client, backend = real_server
    reply = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Hello there"}], max_tokens=6, temperature=0
    )
    choice = reply.choices[0]
    direct = backend.generate(GenerationRequest(query="Hello there", max_new_tokens=6, temperature=0))
    assert choice.message.content == direct.text  # the server adds nothing and loses nothing
    assert choice.finish_reason == direct.finish_reason
    assert reply.usage.prompt_tokens == _prompt_tokens(backend, [Message(role="user", content="Hello there")])
    assert reply.usage.completion_tokens == direct.completion_tokens
    if direct.finish_reason == "length":
        assert reply.usage.completion_tokens == 6
    assert len(backend.tokenizer.encode(choice.message.content)) <= reply.usage.completion_tokens + 1

    chunks = list(
        client.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": "Hello there"}],
            max_tokens=6,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == direct.text
    assert chunks[-1].usage.model_dump() == reply.usage.model_dump()


def test_real_model_with_an_image(real_server):
    client, backend = real_server
    picture = Image.new("RGB", (64, 48), (200, 30, 30))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    reply = client.chat.completions.create(
        model="tiny",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": url}},
                    {"type": "text", "text": "What is this?"},
                ],
            }
        ],
        max_tokens=4,
        temperature=0,
    )
    message = Message(role="user", content=[ImagePart(image=picture), TextPart(text="What is this?")])
    expected = _prompt_tokens(backend, [message])
    assert reply.usage.prompt_tokens == expected
    assert expected > 256  # the picture's 256 embeddings are part of the prompt
    assert reply.usage.completion_tokens >= 1


def test_img_tags_typed_in_text_obey_the_image_settings(
    real_server, tiny_checkpoint: Path, running_server_class
):
    """``<img>PATH</img>`` written in the text (the original Qwen-VL way) must not let a client read files
    the server does not expose: it is loaded through the fetchers under the server's image settings."""
    client, backend = real_server
    picture = tiny_checkpoint / "images" / "img_a.png"
    text = f"Picture 1: <img>{picture}</img>\nWhat is this?"
    with pytest.raises(openai.BadRequestError, match="not allowed"):  # this server allows no local files
        client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": text}], max_tokens=2
        )

    app = create_app(
        backend, model_name="tiny", allow_local_images=True, image_dirs=[str(tiny_checkpoint / "images")]
    )
    server = running_server_class(app).start()
    try:
        local = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=120)
        reply = local.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": text}], max_tokens=4, temperature=0
        )
        direct = backend.generate(GenerationRequest(query=text, max_new_tokens=4, temperature=0))
        assert reply.choices[0].message.content == direct.text  # same picture as the model loading it itself
        outside = f"Picture 1: <img>{tiny_checkpoint / 'config.json'}</img>\nWhat is this?"
        with pytest.raises(openai.BadRequestError, match="outside the allowed directories"):
            local.chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": outside}], max_tokens=2
            )
        # a picture part and a typed <img> tag in one message: each span gets its own picture
        data = base64.b64encode((tiny_checkpoint / "images" / "img_b.png").read_bytes()).decode()
        mixed = [
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}},
            {"type": "text", "text": text},
        ]
        reply = local.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": mixed}], max_tokens=2, temperature=0
        )
        assert reply.choices[0].finish_reason in ("stop", "length")
    finally:
        server.stop()
