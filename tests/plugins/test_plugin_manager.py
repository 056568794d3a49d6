"""The plugin host: built-ins, entry points, QVL_AGENT_PLUGINS, failures, tracing, and the host API."""

from __future__ import annotations

import sys
import textwrap

import pytest

from qvl_agent import plugins
from qvl_agent.backends import ModelBackend
from qvl_agent.hookspecs import hookimpl
from qvl_agent.messages import AgentResponse
from qvl_agent.model.errors import ImageLoadError, InputError
from qvl_agent.testing import ScriptedBackend
from qvl_agent.tools import Tool

BUILTINS = {
    "qvl_agent.plugins.react": ["function_call_protocols"],
    "qvl_agent.plugins.fetchers": ["fetch_image"],
    "qvl_agent.plugins.grounding": ["postprocess_response"],
    "qvl_agent.plugins.formatters": ["format_output"],
}


def shout(text: str) -> str:
    """Upper-case a text."""
    return text.upper()


class ShoutPlugin:
    @hookimpl
    def register_tools(self, register):
        register(Tool.from_function(shout))


class BrokenToolsPlugin:
    @hookimpl
    def register_tools(self, register):
        raise RuntimeError("cannot reach my license server")


def test_builtins_are_registered_by_module_name_through_the_hooks(pm):
    infos = {info.name: info for info in plugins.list_plugins()}
    for name, hooks in BUILTINS.items():
        assert infos[name].builtin and not infos[name].failed
        assert infos[name].hooks == hooks
        assert infos[name].version  # the qvl-agent version


def test_per_test_plugin_tools_appear_and_disappear(pm, register_plugin):
    assert "shout" not in plugins.get_tools()
    register_plugin(ShoutPlugin(), "shouter")
    tools = plugins.get_tools()
    assert tools["shout"].run({"text": "hi"}).content == "HI"
    assert plugins.tools_by_plugin()["shouter"] == ["shout"]
    pm.unregister(name="shouter")
    assert "shout" not in plugins.get_tools()


def test_plugin_whose_hook_raises_is_reported_and_skipped(pm, register_plugin):
    register_plugin(ShoutPlugin(), "shouter")
    register_plugin(BrokenToolsPlugin(), "broken")
    assert list(plugins.get_tools()) == ["shout"]  # the good plugin still works
    info = {i.name: i for i in plugins.list_plugins()}["broken"]
    assert info.failed and "RuntimeError: cannot reach my license server" in info.error
    assert not {i.name: i for i in plugins.list_plugins()}["shouter"].failed


def test_register_rejects_non_tools(pm, register_plugin):
    class Wrong:
        @hookimpl
        def register_tools(self, register):
            register("not a tool")

    register_plugin(Wrong(), "wrong")
    assert plugins.get_tools() == {}
    assert "expects a qvl_agent.tools.Tool" in plugins.list_plugins()[-1].error


def test_later_plugins_override_tools(pm, register_plugin):
    class Other:
        @hookimpl
        def register_tools(self, register):
            register(Tool("shout", "quiet version", {"type": "object"}, lambda: "shh"))

    register_plugin(ShoutPlugin(), "first")
    register_plugin(Other(), "second")
    assert plugins.get_tools()["shout"].description == "quiet version"


def test_models_resolve_by_name_then_matcher(pm, register_plugin):
    class Models:
        @hookimpl
        def register_models(self, register):
            register("echo", lambda spec: ScriptedBackend("hello", name=spec))
            register(
                "remote", lambda spec: ScriptedBackend("far", name=spec), matches=lambda s: s.startswith("x+")
            )

    register_plugin(Models(), "models")
    backend = plugins.resolve_model("echo")
    assert isinstance(backend, ModelBackend) and backend.name == "echo"
    assert plugins.resolve_model("x+http://h/v1").name == "x+http://h/v1"
    assert plugins.resolve_model(backend) is backend
    with pytest.raises(InputError, match=r"no plugin provides a model for 'unknown'.*echo"):
        plugins.resolve_model("unknown")


def test_fetch_image_and_format_errors(pm):
    with pytest.raises(ImageLoadError, match="no image fetcher can load 's3://bucket/x.png'"):
        plugins.fetch_image("s3://bucket/x.png")
    with pytest.raises(InputError, match="no plugin can format output as 'yaml'"):
        plugins.format_output(AgentResponse(text="x"), "yaml")


def test_third_party_hooks_take_part(pm, register_plugin):
    class Extra:
        @hookimpl
        def format_output(self, response, fmt):
            return f"<p>{response.text}</p>" if fmt == "html" else None

        @hookimpl
        def postprocess_response(self, response, context):
            response.extra["words"] = len(response.text.split())

    register_plugin(Extra(), "extra")
    response = plugins.postprocess(AgentResponse(text="two words"), {"options": {}})
    assert response.extra["words"] == 2
    assert plugins.format_output(response, "html") == "<p>two words</p>"
    assert plugins.format_output(response, "text") == "two words"


@pytest.fixture
def fake_distribution(tmp_path, monkeypatch):
    """An installed distribution 'qvl-fake-plugins' with three entry points: good, failing import, bad hook."""
    (tmp_path / "fake_good_plugin.py").write_text(
        textwrap.dedent(
            """
            from qvl_agent.hookspecs import hookimpl
            from qvl_agent.tools import Tool

            @hookimpl
            def register_tools(register):
                register(Tool("ping", "Answer pong.", {"type": "object"}, lambda: "pong"))
            """
        )
    )
    (tmp_path / "fake_broken_plugin.py").write_text("raise ImportError('missing dependency frobnicate')\n")
    (tmp_path / "fake_badhook_plugin.py").write_text(
        "from qvl_agent.hookspecs import hookimpl\n\n@hookimpl\ndef no_such_hook():\n    pass\n"
    )
    dist = tmp_path / "qvl_fake_plugins-1.2.3.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: qvl-fake-plugins\nVersion: 1.2.3\n")
    (dist / "entry_points.txt").write_text(
        "[qvl_agent]\ngood = fake_good_plugin\nbroken = fake_broken_plugin\nbadhook = fake_badhook_plugin\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    for name in ("fake_good_plugin", "fake_broken_plugin", "fake_badhook_plugin"):
        sys.modules.pop(name, None)


def test_entry_points_load_and_failures_are_reported(fake_distribution):
    pm = plugins.create_plugin_manager(allowed=None)
    infos = {info.name: info for info in plugins.list_plugins(pm)}
    assert infos["good"].version == "1.2.3" and not infos["good"].failed and not infos["good"].builtin
    assert infos["good"].hooks == ["register_tools"]
    assert plugins.get_tools(pm)["ping"].run({}).content == "pong"
    assert infos["broken"].failed and "ImportError: missing dependency frobnicate" in infos["broken"].error
    assert infos["badhook"].failed and "no_such_hook" in infos["badhook"].error
    assert all(not infos[name].failed for name in BUILTINS)


@pytest.mark.parametrize(
    ("allowed", "expected"),
    [
        ("", set()),
        ("good", {"good"}),
        ("good, broken", {"good", "broken"}),
        ("qvl-fake-plugins", {"good", "broken", "badhook"}),
    ],
)
def test_env_var_limits_external_plugins(fake_distribution, monkeypatch, allowed, expected):
    monkeypatch.setenv("QVL_AGENT_PLUGINS", allowed)
    pm = plugins.create_plugin_manager()
    names = {info.name for info in plugins.list_plugins(pm)} - set(BUILTINS) - {"qvl_agent.plugins.models"}
    fake = {"good", "broken", "badhook"}
    assert names & fake == expected
    assert ("ping" in plugins.get_tools(pm)) == ("good" in expected)


def test_trace_env_var_prints_hook_calls(monkeypatch, capsys, register_plugin):
    monkeypatch.setenv("QVL_AGENT_TRACE", "1")
    pm = plugins.create_plugin_manager(load_entry_points=False)
    pm.register(ShoutPlugin(), name="shouter")
    plugins.get_tools(pm)
    plugins.format_output(AgentResponse(text="hi"), "text", pm=pm)
    err = capsys.readouterr().err
    assert "register_tools" in err and "format_output" in err and "finish format_output --> hi" in err
