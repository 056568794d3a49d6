"""``qvl-agent console`` on the command line and the console mounted beside a FastAPI app (``serve --ui``)."""

from __future__ import annotations

from click.testing import CliRunner
from fastapi import FastAPI
from fastapi.testclient import TestClient

from qvl_agent.cli import main
from qvl_agent.testing import cli_error_line


def test_console_command_help():
    result = CliRunner().invoke(main, ["console", "--help"])
    assert result.exit_code == 0, result.output
    for option in ("--model", "--host", "--port", "--max-steps"):
        assert option in result.output


def test_console_command_rejects_bad_options():
    result = CliRunner().invoke(main, ["console", "--port", "not-a-port"])
    assert result.exit_code != 0 and "--port" in result.output


def test_mount_console_beside_an_api(console_plugin):
    from qvl_agent.console import mount_console

    api = FastAPI()

    @api.get("/v1/models")
    def models() -> dict:
        return {"data": [{"id": "scripted-test"}]}

    app = mount_console(api, path="/ui", model="scripted-test")
    assert app is api
    with TestClient(app) as client:
        assert client.get("/v1/models").json() == {"data": [{"id": "scripted-test"}]}  # the API still answers
        page = client.get("/ui/")
        assert page.status_code == 200 and "qvl-agent console" in page.text
        config = client.get("/ui/config").json()
        components = {c.get("props", {}).get("elem_id") for c in config["components"]}
        assert {"qvl-chat", "qvl-input", "qvl-tools", "qvl-grounding"} <= components


def test_console_command_unknown_model_fails_before_serving(console_plugin, monkeypatch):
    import qvl_agent.console.app as app

    def must_not_launch(*args, **kwargs):
        raise AssertionError("the console was served with a model that cannot load")

    monkeypatch.setattr(app, "launch_console", must_not_launch)
    result = CliRunner().invoke(main, ["console", "--model", "no-such-model"])
    line = cli_error_line(result)
    assert "cannot load model 'no-such-model'" in line and "no plugin provides a model" in line


def test_console_command_busy_port_is_one_line(console_plugin):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(main, ["console", "--model", "scripted-test", "--port", str(port)])
    line = cli_error_line(result)
    assert f"cannot listen on 127.0.0.1:{port}" in line and "OSError" in line
