"""Fixtures for the agent tests: a fresh plugin manager (built-ins only) per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from qvl_agent import plugins


@pytest.fixture
def plugin_manager() -> Iterator[plugins.PluginManager]:
    """The process-wide plugin manager replaced by one holding only the built-in plugins; per-test plugins
    are added with ``plugin_manager.register(obj, name=...)``."""
    pm = plugins.create_plugin_manager(load_entry_points=False)
    previous = plugins.set_plugin_manager(pm)
    try:
        yield pm
    finally:
        plugins.set_plugin_manager(previous)
