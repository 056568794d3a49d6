"""``qvl-agent console`` on the command line and the console mounted beside a FastAPI app (``serve --ui``)."""

from __future__ import annotations

from click.testing import CliRunner
from fastapi import FastAPI
from fastapi.testclient import TestClient

from qvl_agent.cli import main


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
