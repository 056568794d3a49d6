"""What the side panel offers: installed plugins, the tools each one registers, and the model names.

Everything is read from the plugin manager (``qvl_agent.plugins``), never hard-coded, so a freshly
``pip install``-ed plugin (or one registered by a test) shows up on the next console start.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class PluginEntry:
    """One loaded plugin as the console lists it."""

    name: str
    version: str | None = None
    tools: list[str] = field(default_factory=list)
    hooks: list[str] = field(default_factory=list)
    builtin: bool = False
    failed: bool = False
    error: str | None = None

    @property
    def short_name(self) -> str:
        """``qvl_agent.plugins.grounding`` -> ``grounding``; external plugin names are kept."""
        return self.name.removeprefix("qvl_agent.plugins.")

    @property
    def label(self) -> str:
        version = f" {self.version}" if self.version and not self.builtin else ""
        count = f" · {len(self.tools)} tool{'s' if len(self.tools) != 1 else ''}" if self.tools else ""
        return f"{self.short_name}{version}{count}"


@dataclass
class Catalogue:
    """Plugins, tools (name -> description) and registered model names, as found at console start."""

    plugins: list[PluginEntry]
    tools: dict[str, str]
    models: list[str]

    @property
    def tool_plugins(self) -> list[PluginEntry]:
        """Loaded plugins that register tools (the ones a checkbox can switch)."""
        return [p for p in self.plugins if p.tools and not p.failed]

    def tools_of(self, plugin_names: list[str]) -> list[str]:
        """The tools registered by the given plugins, in catalogue order."""
        chosen = {t for p in self.plugins if p.name in plugin_names for t in p.tools}
        return [t for t in self.tools if t in chosen]


def load_catalogue(pm: Any | None = None) -> Catalogue:
    """Read plugins, tools and models from the plugin manager (default: the process-wide one)."""
    from qvl_agent import plugins

    tools = {name: tool.description for name, tool in plugins.get_tools(pm).items()}
    owners = plugins.tools_by_plugin(pm)
    entries = [
        PluginEntry(
            name=info.name,
            version=info.version,
            tools=[t for t in owners.get(info.name, []) if t in tools],
            hooks=list(info.hooks),
            builtin=info.builtin,
            failed=info.failed,
            error=info.error,
        )
        for info in plugins.list_plugins(pm)
    ]
    models = list(dict.fromkeys(r.name for r in plugins.get_models(pm)))
    return Catalogue(plugins=entries, tools=tools, models=models)
