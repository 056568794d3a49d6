"""The remote OpenAI-compatible upstream backend: one real server pointed at another on loopback."""

from __future__ import annotations

import base64
import io
import json

import httpx
import openai
import pytest
from PIL import Image

from qvl_agent.messages import GenerationRequest
from qvl_agent.prompting.chatml import build_chatml_text
from qvl_agent.server import create_app
from qvl_agent.upstream import UpstreamBackend, chat_messages, chatml_prompt

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


@pytest.fixture
def front_and_back(scripted_server, serve, make_client):
    """``make(replies)`` → (client of the front server, back backend); the front generates on the back."""

    def make(replies, **kwargs):
        back, backend = scripted_server(replies)
        front = serve(create_app(f"openai+http://127.0.0.1:{back.port}/v1?model=scripted", **kwargs))
        return make_client(front), backend

    return make


def test_tools_through_the_upstream(front_and_back):
    client, back = front_and_back(
        [
            'Thought: look it up\nAction: get_weather\nAction Input: {"city": "Bern"}\nObservation: (cut)',
            "Thought: done\nFinal Answer: Sunny.",
        ]
    )
    models = client.models.list()
    assert [m.id for m in models.data] == ["scripted"]
    messages = [{"role": "user", "content": "Weather in Bern?"}]
    reply = client.chat.completions.create(model="scripted", messages=messages, tools=TOOLS)
    (call,) = reply.choices[0].message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Bern"}
    # the back model got the ReAct prompt the front rendered, with the front's "Observation:" stop word
    first = back.requests[0]
    assert first.query.startswith("Answer the following questions") and first.query.endswith(
        "Question: Weather in Bern?"
    )
    assert "Observation:" in first.stop
    assert reply.usage.prompt_tokens == back.count_tokens(first.query)  # usage reported by the upstream

    messages += [
        reply.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    final = client.chat.completions.create(model="scripted", messages=messages, tools=TOOLS)
    assert final.choices[0].message.content == "Sunny."
    # completion mode crossed the wire: the back continued the open assistant turn
    second = back.requests[1]
    assert second.query is None and second.history[-1][1].endswith("Observation: sunny\nThought:")


def test_streaming_and_images_through_the_upstream(front_and_back):
    client, back = front_and_back("a green square, streamed in pieces")
    buffer = io.BytesIO()
    Image.new("RGB", (31, 17), "green").save(buffer, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    content = [{"type": "text", "text": "What is it?"}, {"type": "image_url", "image_url": {"url": url}}]
    chunks = list(
        client.chat.completions.create(
            model="scripted",
            messages=[{"role": "user", "content": content}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert (
        "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        == "a green square, streamed in pieces"
    )
    assert chunks[-1].usage.completion_tokens == 6
    (image,) = back.requests[-1].images
    assert image.size == (31, 17) and image.getpixel((3, 3)) == (0, 128, 0)
    # the back server re-renders the picture where it was (and strips the trailing newline, as ReAct does)
    assert back.requests[-1].query == "What is it?Picture 1: <img>image-1</img>"


def test_upstream_errors_become_502(scripted_server, serve, make_client):
    back, _ = scripted_server("x")
    front = serve(create_app(f"openai+http://127.0.0.1:{back.port}/v1?model=not-there", model_name="front"))
    with pytest.raises(openai.InternalServerError) as info:
        make_client(front).chat.completions.create(
            model="front", messages=[{"role": "user", "content": "hi"}]
        )
    assert info.value.status_code == 502 and "not-there" in info.value.body["message"]


def test_spec_options_and_model_discovery():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/v1/models":
            return httpx.Response(
                200, json={"object": "list", "data": [{"id": "Qwen/Qwen-VL-Chat", "object": "model"}]}
            )
        body = json.loads(request.content)
        return httpx.Response(
            200,
            json={
                "choices": [{"index": 0, "text": " the answer", "finish_reason": "length"}],
                "usage": {"prompt_tokens": 11, "completion_tokens": 2},
                "echo": body,
            },
        )

    backend = UpstreamBackend.from_spec(
        "openai+http://engine:9000/v1?mode=completions&max_tokens=64", transport=httpx.MockTransport(handler)
    )
    assert backend.base_url == "http://engine:9000/v1" and backend.mode == "completions"
    request = GenerationRequest(
        history=[("hi", "hello")], query="And now?", stop=["Observation:"], temperature=0.5
    )
    result = backend.generate(request)
    assert (result.text, result.finish_reason, result.prompt_tokens, result.completion_tokens) == (
        " the answer",
        "length",
        11,
        2,
    )
    body = json.loads(seen[-1].content)
    assert seen[-1].url.path == "/v1/completions" and body["model"] == "Qwen/Qwen-VL-Chat"
    # byte-for-byte the ChatML text the local core would see
    assert body["prompt"] == build_chatml_text("You are a helpful assistant.", [("hi", "hello")], "And now?")
    assert body["stop"] == ["Observation:", "<|im_end|>", "<|im_start|>"]
    assert body["max_tokens"] == 64 and body["temperature"] == 0.5
    with pytest.raises(ValueError, match="cannot pass pictures"):
        backend.payload(request.model_copy(update={"images": [Image.new("RGB", (4, 4))]}))
    with pytest.raises(ValueError, match="unknown upstream option"):
        UpstreamBackend.from_spec("openai+http://engine:9000/v1?colour=blue")


def test_prompt_rendering_helpers():
    completion = GenerationRequest(history=[("q", "Thought: partial")], query=None)
    assert chatml_prompt(completion).endswith("<|im_start|>assistant\nThought: partial")
    picture = Image.new("RGB", (5, 5), "white")
    request = GenerationRequest(query="Picture 1: <img>image-1</img>\nDescribe.", images=[picture])
    messages = chat_messages(request)
    assert messages[0] == {"role": "system", "content": "You are a helpful assistant."}
    parts = messages[1]["content"]
    assert parts[0]["type"] == "image_url" and parts[0]["image_url"]["url"].startswith(
        "data:image/png;base64,"
    )
    assert parts[1] == {"type": "text", "text": "Describe."}


def test_passthrough_forwards_tools_to_the_engine(scripted_server, serve, make_client):
    back, backend = scripted_server('Thought: t\nAction: get_weather\nAction Input: {"city": "Rome"}')
    front = serve(
        create_app(
            f"openai+http://127.0.0.1:{back.port}/v1?model=scripted&mode=passthrough", model_name="front"
        )
    )
    client = make_client(front)
    reply = client.chat.completions.create(
        model="front", messages=[{"role": "user", "content": "Rome?"}], tools=TOOLS
    )
    (call,) = reply.choices[0].message.tool_calls  # made by the engine (here: the back server's ReAct)
    assert reply.model == "front" and call.function.name == "get_weather"
    assert backend.requests[-1].query.endswith("Question: Rome?")  # the back rendered the tools itself
    chunks = list(
        client.chat.completions.create(
            model="front", messages=[{"role": "user", "content": "Rome?"}], tools=TOOLS, stream=True
        )
    )
    arguments = "".join(
        tc.function.arguments or "" for c in chunks for tc in c.choices[0].delta.tool_calls or []
    )
    assert json.loads(arguments) == {"city": "Rome"} and all(c.model == "front" for c in chunks)
