"""``qvl-agent serve --ui`` mounts the Gradio console at /ui beside the API."""

from __future__ import annotations

from click.testing import CliRunner
from fastapi.testclient import TestClient

from qvl_agent.cli import main
from qvl_agent.testing import ScriptedBackend


def test_serve_ui_mounts_the_console_beside_the_api(register_backend, monkeypatch):
    register_backend("scripted", ScriptedBackend("hello from the api"))
    calls = []
    monkeypatch.setattr("uvicorn.run", lambda app, **kwargs: calls.append(app))
    result = CliRunner().invoke(main, ["serve", "--model", "scripted", "--ui"])
    assert result.exit_code == 0, result.output
    assert "/ui" in result.output
    (app,) = calls
    with TestClient(app) as client:
        page = client.get("/ui/")
        assert page.status_code == 200
        assert "gradio" in page.text.lower()
        reply = client.post(
            "/v1/chat/completions",
            json={"model": "scripted", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert reply.json()["choices"][0]["message"]["content"] == "hello from the api"
