"""Errors as OpenAI error bodies (and the right openai exception classes), the bounded queue, agent mode."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from qvl_agent.hookspecs import hookimpl
from qvl_agent.messages import GenerationRequest
from qvl_agent.model.errors import ContextLengthError
from qvl_agent.server import create_app
from qvl_agent.testing import ScriptedBackend
from qvl_agent.tools import Tool

USER = [{"role": "user", "content": "hi"}]


def assert_error_body(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    return body["error"]


def test_unknown_model_is_404(scripted_server, make_client):
    server, _ = scripted_server("x")
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        make_client(server).chat.completions.create(model="gpt-4o", messages=USER)
    with pytest.raises(openai.NotFoundError):
        make_client(server).models.retrieve("gpt-4o")


def test_api_key(scripted_server, make_client):
    server, _ = scripted_server("fine", api_key="s3cret")
    with pytest.raises(openai.AuthenticationError):
        make_client(server, api_key="wrong").chat.completions.create(model="scripted", messages=USER)
    with pytest.raises(openai.AuthenticationError):
        make_client(server, api_key="wrong").models.list()
    reply = make_client(server, api_key="s3cret").chat.completions.create(model="scripted", messages=USER)
    assert reply.choices[0].message.content == "fine"
    assert httpx.get(server.url + "/health").status_code == 200  # health needs no key


def test_raw_http_errors(scripted_server):
    server, backend = scripted_server("x", max_body_bytes=10_000)
    url = server.url + "/v1/chat/completions"
    assert_error_body(httpx.get(server.url + "/v1/nothing-here"), 404)
    error = assert_error_body(
        httpx.post(url, content=b"{not json", headers={"content-type": "application/json"}), 400
    )
    assert "not valid JSON" in error["message"] and error["param"] is None  # not a character offset
    error = assert_error_body(
        httpx.post(url, json={"model": "scripted", "messages": [{"role": "robot", "content": "x"}]}), 400
    )
    assert error["param"] == "messages[0].role"
    error = assert_error_body(httpx.post(url, json={"messages": USER}), 400)
    assert error["param"] == "model"
    error = assert_error_body(
        httpx.post(url, json={"model": "scripted", "messages": USER, "tools": [{"type": "retrieval"}]}), 400
    )
    assert error["param"].startswith("tools[0]")
    error = assert_error_body(
        httpx.post(url, json={"model": "scripted", "messages": [{"role": "user", "content": "x" * 20_000}]}),
        413,
    )
    assert "at most 10000 bytes" in error["message"]
    assert_error_body(httpx.post(url, json=[1, 2]), 400)
    assert backend.requests == []


def test_conversation_errors_are_400(scripted_server, make_client):
    server, _ = scripted_server("x")
    client = make_client(server)
    with pytest.raises(openai.BadRequestError, match="Expecting at least one user message"):
        client.chat.completions.create(model="scripted", messages=[{"role": "system", "content": "s"}])
    with pytest.raises(openai.BadRequestError, match="must follow an assistant message"):
        client.chat.completions.create(
            model="scripted", messages=[*USER, {"role": "tool", "tool_call_id": "a", "content": "r"}]
        )
    with pytest.raises(openai.BadRequestError, match="either 'functions'"):
        client.chat.completions.create(
            model="scripted",
            messages=USER,
            functions=[{"name": "f", "parameters": {}}],
            tools=[{"type": "function", "function": {"name": "g"}}],
        )


def test_backend_errors(register_backend, serve, make_client):
    def fail(request: GenerationRequest) -> str:
        if "long" in (request.query or ""):
            raise ContextLengthError("prompt is 9000 tokens, the model's context window is 8192 tokens")
        raise RuntimeError("GPU on fire")

    register_backend("failing", ScriptedBackend(fail, name="failing"))
    server = serve(create_app("failing"))
    client = make_client(server)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="failing", messages=[{"role": "user", "content": "too long"}])
    assert info.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="failing", messages=USER)
    assert "GPU on fire" in info.value.body["message"] and info.value.body["type"] == "server_error"
    assert httpx.get(server.url + "/health").json()["active"] == 0


def _blocking_backend() -> tuple[ScriptedBackend, threading.Event, threading.Event]:
    started, release = threading.Event(), threading.Event()

    def reply(request: GenerationRequest) -> str:
        started.set()
        assert release.wait(10)
        return "done"

    return ScriptedBackend(reply, name="blocking"), started, release


def test_queue_full_is_429_and_queue_timeout_is_503(register_backend, serve, make_client):
    backend, started, release = _blocking_backend()
    register_backend("blocking", backend)
    server = serve(create_app("blocking", max_concurrency=1, max_queue=1, queue_timeout=0.5))
    client = make_client(server)
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(client.chat.completions.create, model="blocking", messages=USER)
        assert started.wait(5)
        # the event loop is not blocked by the running generation
        t0 = time.monotonic()
        assert httpx.get(server.url + "/health").json() == {
            "status": "ok",
            "model": "blocking",
            "active": 1,
            "waiting": 0,
            "max_concurrency": 1,
            "max_queue": 1,
        }
        assert time.monotonic() - t0 < 1
        queued = pool.submit(client.chat.completions.create, model="blocking", messages=USER)
        deadline = time.monotonic() + 5
        while httpx.get(server.url + "/health").json()["waiting"] != 1:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with pytest.raises(openai.RateLimitError) as info:
            client.chat.completions.create(model="blocking", messages=USER)
        assert info.value.response.headers["retry-after"] == "1"
        with pytest.raises(openai.InternalServerError) as info:  # 503 after waiting 0.5 s
            queued.result(timeout=10)
        assert info.value.status_code == 503 and info.value.body["code"] == "queue_timeout"
        release.set()
        assert first.result(timeout=10).choices[0].message.content == "done"
    assert httpx.get(server.url + "/health").json()["active"] == 0


def test_queued_requests_run_in_order_once_a_slot_frees(register_backend, serve, make_client):
    backend, started, release = _blocking_backend()
    register_backend("blocking", backend)
    server = serve(create_app("blocking", max_concurrency=1, max_queue=4))
    client = make_client(server)
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(client.chat.completions.create, model="blocking", messages=USER)]
        assert started.wait(5)
        futures += [
            pool.submit(client.chat.completions.create, model="blocking", messages=USER) for _ in range(2)
        ]
        deadline = time.monotonic() + 5
        while httpx.get(server.url + "/health").json()["waiting"] != 2:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        release.set()
        assert [f.result(timeout=10).choices[0].message.content for f in futures] == ["done"] * 3
    assert len(backend.requests) == 3


def test_server_side_agent_mode(register_backend, serve, make_client, plugin_manager):
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    class ToolPlugin:
        @hookimpl
        def register_tools(self, register):  # noqa: ANN001, ANN202
            register(Tool.from_function(add))

    plugin_manager.register(ToolPlugin(), name="test-tools")
    backend = ScriptedBackend(
        [
            'Thought: I should add.\nAction: add\nAction Input: {"a": 2, "b": 3}\nObservation:',
            "Thought: I now know the final answer\nFinal Answer: The sum is 5.",
        ],
        name="agentic",
    )
    register_backend("agentic", backend)
    server = serve(create_app("agentic"))
    client = make_client(server)
    reply = client.chat.completions.create(
        model="agentic",
        messages=[{"role": "user", "content": "2+3?"}],
        extra_body={"agent": {"tools": ["add"], "max_steps": 3}},
    )
    message = reply.choices[0].message
    assert message.content == "The sum is 5." and reply.choices[0].finish_reason == "stop"
    (step,) = message.model_extra["agent_trace"]
    assert step["tool"] == "add" and step["observation"] == "5" and step["is_error"] is False
    assert step["thought"] == "I should add."
    # the observation went back to the model
    assert "Observation: 5" in backend.requests[-1].history[-1][1]
    assert reply.usage.completion_tokens > 0

    backend.requests.clear()
    chunks = list(
        client.chat.completions.create(
            model="agentic",
            messages=[{"role": "user", "content": "2+3?"}],
            stream=True,
            extra_body={"agent": {"tools": ["add"]}},
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "The sum is 5."
    assert chunks[-1].choices[0].delta.model_extra["agent_trace"][0]["tool"] == "add"

    with pytest.raises(openai.BadRequestError, match="unknown tool"):
        client.chat.completions.create(
            model="agentic", messages=USER, extra_body={"agent": {"tools": ["nope"]}}
        )
