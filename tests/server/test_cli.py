"""``qvl-agent serve``: options reach the app; bad specs fail with a clear message."""

from __future__ import annotations

from click.testing import CliRunner
from fastapi.testclient import TestClient

from qvl_agent.cli import main
from qvl_agent.testing import ScriptedBackend


def test_serve_builds_the_app_and_runs_uvicorn(register_backend, monkeypatch):
    register_backend("scripted", ScriptedBackend("hello from the cli"))
    calls = []
    monkeypatch.setattr("uvicorn.run", lambda app, **kwargs: calls.append((app, kwargs)))
    result = CliRunner().invoke(
        main,
        [
            "serve",
            "--model",
            "scripted",
            "--port",
            "8123",
            "--api-key",
            "k",
            "--model-name",
            "mine",
            "--max-queue",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    ((app, kwargs),) = calls
    assert kwargs["host"] == "127.0.0.1" and kwargs["port"] == 8123
    assert app.state.limiter.max_queue == 2
    with TestClient(app) as client:
        assert client.get("/v1/models").status_code == 401
        reply = client.post(
            "/v1/chat/completions",
            headers={"Authorization": "Bearer k"},
            json={"model": "mine", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert reply.json()["choices"][0]["message"]["content"] == "hello from the cli"


def test_serve_unknown_model_spec(plugin_manager):
    result = CliRunner().invoke(main, ["serve", "--model", "no-such-model-anywhere"])
    assert result.exit_code != 0
    assert "no plugin provides a model for 'no-such-model-anywhere'" in result.output


def test_serve_help_lists_options():
    result = CliRunner().invoke(main, ["serve", "--help"])
    assert result.exit_code == 0
    for option in ("--model", "--host", "--port", "--api-key", "--max-queue", "--allow-local-images"):
        assert option in result.output
