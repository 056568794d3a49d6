"""``qvl-agent plugins`` and ``qvl-agent tools`` list what the plugin manager holds."""

from __future__ import annotations

import json

from click.testing import CliRunner

from qvl_agent.cli import main
from qvl_agent.hookspecs import hookimpl
from qvl_agent.tools import Tool


class Tools:
    @hookimpl
    def register_tools(self, register):
        def greet(name: str) -> str:
            """Say hello."""
            return f"hello {name}"

        register(Tool.from_function(greet))


class Broken:
    @hookimpl
    def register_tools(self, register):
        raise ValueError("boom")


def test_plugins_json(pm, register_plugin):
    register_plugin(Tools(), "greeter")
    register_plugin(Broken(), "broken")
    result = CliRunner().invoke(main, ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert rows["qvl_agent.plugins.react"]["builtin"] and rows["qvl_agent.plugins.react"]["hooks"] == [
        "function_call_protocols"
    ]
    assert rows["greeter"]["tools"] == ["greet"] and not rows["greeter"]["failed"]
    assert rows["broken"]["failed"] and "ValueError: boom" in rows["broken"]["error"]


def test_plugins_text(pm, register_plugin):
    register_plugin(Broken(), "broken")
    result = CliRunner().invoke(main, ["plugins"])
    assert result.exit_code == 0
    assert "qvl_agent.plugins.fetchers" in result.output and "hooks: fetch_image" in result.output
    assert (
        "broken (plugin) FAILED" in result.output
        and "error: hook register_tools: ValueError: boom" in result.output
    )


def test_tools_json_and_text(pm, register_plugin):
    register_plugin(Tools(), "greeter")
    result = CliRunner().invoke(main, ["tools", "--json"])
    assert result.exit_code == 0
    (row,) = [r for r in json.loads(result.output) if r["name"] == "greet"]
    assert row["plugin"] == "greeter" and row["description"] == "Say hello."
    assert row["parameters"] == {
        "type": "object",
        "properties": {"name": {"type": "string"}},
        "required": ["name"],
    }
    text = CliRunner().invoke(main, ["tools"]).output
    assert "greet (from greeter)" in text and '"required": ["name"]' in text
