"""Streaming (SSE) against a real server: the openai client's view and the raw framing (httpx)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from qvl_agent.backends import ModelBackend
from qvl_agent.messages import GenerationRequest, GenerationResult
from qvl_agent.server import create_app

WEATHER = {
    "name": "get_weather",
    "description": "Get the current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
TOOLS = [{"type": "function", "function": WEATHER}]
CALL_REPLY = 'Thought: I need the weather.\nAction: get_weather\nAction Input: {"city": "Paris", "days": [1, 2]}\nObservation:'


class SlowBackend(ModelBackend):
    """Streams ``n`` numbered words, ``delay`` seconds apart; records how far each stream got."""

    name = "slow"

    def __init__(self, n: int = 200, delay: float = 0.02, fail_at: int | None = None) -> None:
        self.n, self.delay, self.fail_at = n, delay, fail_at
        self.produced: list[int] = []
        self.closed = threading.Event()

    def generate(self, request: GenerationRequest) -> GenerationResult:
        text = "".join(self.stream(request))
        return GenerationResult(text=text, prompt_tokens=1, completion_tokens=self.n)

    def stream(self, request: GenerationRequest) -> Iterator[str]:
        self.produced.append(0)
        try:
            for i in range(self.n):
                if self.fail_at is not None and i == self.fail_at:
                    raise RuntimeError("the model fell over")
                time.sleep(self.delay)
                self.produced[-1] += 1
                yield f"w{i} "
        finally:
            self.closed.set()
        return GenerationResult(text="", prompt_tokens=1, completion_tokens=self.n)


def sse_events(response: httpx.Response) -> list[str]:
    """The ``data:`` payloads of an SSE response, checking the framing on the way."""
    body = response.read().decode()
    events = [block for block in body.split("\n\n") if block.strip()]
    payloads = []
    for block in events:
        lines = [line for line in block.split("\n") if not line.startswith(":")]  # comments are pings
        assert len(lines) == 1 and lines[0].startswith("data: "), block
        payloads.append(lines[0][len("data: ") :])
    return payloads


def test_stream_text_framing(scripted_server):
    server, _ = scripted_server("Hello there, streaming world.")
    body = {"model": "scripted", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        payloads = sse_events(response)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and chunks[-1]["choices"][0]["delta"] == {}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == "Hello there, streaming world."
    assert len(chunks) > 4  # really streamed in pieces


def test_stream_text_with_openai_client_and_usage(scripted_server, make_client):
    server, backend = scripted_server("one two three four")
    stream = make_client(server).chat.completions.create(
        model="scripted",
        messages=[{"role": "user", "content": "count please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == [] and usage_chunk.usage is not None
    assert usage_chunk.usage.prompt_tokens == backend.count_tokens("count please")
    assert usage_chunk.usage.completion_tokens == 4 and usage_chunk.usage.total_tokens == 6
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three four"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


def test_stream_tool_call(scripted_server, make_client):
    server, _ = scripted_server(CALL_REPLY, chunk_size=3)
    stream = make_client(server).chat.completions.create(
        model="scripted", messages=[{"role": "user", "content": "Weather?"}], tools=TOOLS, stream=True
    )
    content, name, arguments, ids, finish = "", "", "", set(), None
    argument_chunks = 0
    for chunk in stream:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        content += delta.content or ""
        for call in delta.tool_calls or []:
            assert call.index == 0
            if call.id:
                ids.add(call.id)
                assert call.type == "function"
            name += call.function.name or ""
            if call.function.arguments:
                arguments += call.function.arguments
                argument_chunks += 1
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert name == "get_weather" and len(ids) == 1 and ids.pop().startswith("call_")
    assert json.loads(arguments) == {"city": "Paris", "days": [1, 2]}
    assert argument_chunks > 1  # the arguments streamed as they were generated
    assert content == "Thought: I need the weather."


def test_stream_legacy_function_call(scripted_server, make_client):
    server, _ = scripted_server(CALL_REPLY)
    stream = make_client(server).chat.completions.create(
        model="scripted", messages=[{"role": "user", "content": "Weather?"}], functions=[WEATHER], stream=True
    )
    name, arguments, finish = "", "", None
    for chunk in stream:
        delta = chunk.choices[0].delta
        assert delta.tool_calls is None
        if delta.function_call:
            name += delta.function_call.name or ""
            arguments += delta.function_call.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert (name, finish) == ("get_weather", "function_call")
    assert json.loads(arguments)["city"] == "Paris"


def test_stream_final_answer_with_tools_offered(scripted_server, make_client):
    server, _ = scripted_server(
        "Thought: I now know the final answer\nFinal Answer: It is sunny in Paris today."
    )
    chunks = list(
        make_client(server).chat.completions.create(
            model="scripted", messages=[{"role": "user", "content": "Weather?"}], tools=TOOLS, stream=True
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == "It is sunny in Paris today."
    assert sum(1 for c in chunks if c.choices[0].delta.content) > 2  # streamed after "Final Answer:"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.choices[0].delta.tool_calls is None for c in chunks)


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_weather"}}])
def test_stream_forced_tool_choice(scripted_server, make_client, choice):
    reply = ' get_weather\nAction Input: {"city": "Oslo"}' if choice == "required" else ' {"city": "Oslo"}'
    server, _ = scripted_server(reply)
    stream = make_client(server).chat.completions.create(
        model="scripted",
        messages=[{"role": "user", "content": "x"}],
        tools=TOOLS,
        tool_choice=choice,
        stream=True,
    )
    arguments, names = "", []
    for chunk in stream:
        for call in chunk.choices[0].delta.tool_calls or []:
            names += [call.function.name] if call.function.name else []
            arguments += call.function.arguments or ""
    assert names == ["get_weather"] and json.loads(arguments) == {"city": "Oslo"}


def test_error_after_stream_started(register_backend, serve, make_client):
    backend = SlowBackend(n=10, delay=0.001, fail_at=3)
    register_backend("slow", backend)
    server = serve(create_app("slow"))
    stream = make_client(server).chat.completions.create(
        model="slow", messages=[{"role": "user", "content": "x"}], stream=True
    )
    received = ""
    with pytest.raises(openai.APIError, match="the model fell over"):
        for chunk in stream:
            received += chunk.choices[0].delta.content or ""
    assert received == "w0 w1 w2 "
    body = {"model": "slow", "messages": [{"role": "user", "content": "x"}], "stream": True}
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body) as response:
        payloads = sse_events(response)
    last = json.loads(payloads[-1])
    assert set(last["error"]) == {"message", "type", "param", "code"}
    assert "[DONE]" not in payloads
    assert httpx.get(server.url + "/health").json()["active"] == 0


def test_disconnect_mid_stream_stops_generation_and_frees_the_slot(register_backend, serve):
    backend = SlowBackend(n=500, delay=0.01)
    register_backend("slow", backend)
    server = serve(create_app("slow", max_concurrency=1, max_queue=0))
    body = {"model": "slow", "messages": [{"role": "user", "content": "x"}], "stream": True}
    with httpx.Client(timeout=10) as client:
        with client.stream("POST", server.url + "/v1/chat/completions", json=body) as response:
            lines = response.iter_lines()
            for line in lines:
                if "w2 " in line:
                    break
            assert httpx.get(server.url + "/health").json()["active"] == 1
            # the only slot is taken and there is no queue: a second request is turned away
            busy = httpx.post(server.url + "/v1/chat/completions", json={**body, "stream": False})
            assert busy.status_code == 429 and busy.json()["error"]["code"] == "server_busy"
        # leaving the block closes the connection mid-stream
    assert backend.closed.wait(5), "generation did not stop after the client went away"
    deadline = time.monotonic() + 5
    while httpx.get(server.url + "/health").json()["active"] != 0:
        assert time.monotonic() < deadline, "the slot was not freed"
        time.sleep(0.02)
    assert backend.produced[0] < 100  # stopped long before its 500 words
    backend.n, backend.delay = 3, 0
    reply = httpx.post(server.url + "/v1/chat/completions", json={**body, "stream": False})
    assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["content"] == "w0 w1 w2 "


def test_disconnect_during_a_non_streamed_request_stops_generation(register_backend, serve):
    """A client that gives up on a plain (stream=false) request frees the slot: its generation stops."""
    backend = SlowBackend(n=500, delay=0.01)
    register_backend("slow", backend)
    server = serve(create_app("slow", max_concurrency=1, max_queue=0))
    body = {"model": "slow", "messages": [{"role": "user", "content": "x"}]}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.url + "/v1/chat/completions", json=body, timeout=0.5)
    assert backend.closed.wait(5), "generation did not stop after the client went away"
    deadline = time.monotonic() + 5
    while httpx.get(server.url + "/health").json()["active"] != 0:
        assert time.monotonic() < deadline, "the slot was not freed"
        time.sleep(0.02)
    assert backend.produced[0] < 200  # stopped long before its 500 words (5 s)
    backend.n, backend.delay = 3, 0
    reply = httpx.post(server.url + "/v1/chat/completions", json=body)
    assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["content"] == "w0 w1 w2 "
