"""Fixtures for plugin tests: a fresh plugin manager (built-ins only) installed as the process-wide one, and a
helper registering per-test plugins with ``pm.register`` / ``pm.unregister``."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from qvl_agent import plugins


@pytest.fixture
def pm() -> Iterator[plugins.PluginManager]:
    """A manager with the built-in plugins only (no entry points), used by every ``qvl_agent.plugins`` call."""
    manager = plugins.create_plugin_manager(load_entry_points=False)
    previous = plugins.set_plugin_manager(manager)
    yield manager
    plugins.set_plugin_manager(previous)


@pytest.fixture
def register_plugin(pm: plugins.PluginManager) -> Iterator[Callable[[object, str], object]]:
    """``register_plugin(obj, name)`` registers a plugin for the duration of the test."""
    names: list[str] = []

    def register(plugin: object, name: str) -> object:
        pm.register(plugin, name=name)
        names.append(name)
        return plugin

    yield register
    for name in names:
        if pm.get_plugin(name) is not None:
            pm.unregister(name=name)
