"""Fixtures for plugin tests: a fresh plugin manager (built-ins only) installed as the process-wide one, and a
helper registering per-test plugins with ``pm.register`` / ``pm.unregister``."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from qvl_agent import plugins


@pytest.fixture
def pm(plugin_manager: plugins.PluginManager) -> plugins.PluginManager:
    """The root ``plugin_manager`` fixture (built-ins only, used by every ``qvl_agent.plugins`` call)."""
    return plugin_manager


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
