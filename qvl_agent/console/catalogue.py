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
    failed: bool = False
    error: str | None = None

    @property
    def label(self) -> str:
        version = f" {self.version}" if self.version else ""
        count = f" · {len(self.tools)} tool{'s' if len(self.tools) != 1 else ''}" if self.tools else ""
        return f"{self.name}{version}{count}"


@dataclass
class Catalogue:
    """Plugins, tools (name -> description) and registered model names, as found at console start."""

    plugins: list[PluginEntry]
    tools: dict[str, str]
    models: list[str]

    def tools_of(self, plugin_names: list[str]) -> list[str]:
        """The tools registered by the given plugins, plus tools whose plugin is unknown."""
        owned = {t for p in self.plugins for t in p.tools}
        chosen = [t for p in self.plugins if p.name in plugin_names for t in p.tools]
        return [t for t in self.tools if t in chosen or t not in owned]


def _collect(hook: Any) -> dict[str, list[Any]]:
    """Call each implementation of a ``register_*`` hook with a collecting callback: plugin -> registrations."""
    found: dict[str, list[Any]] = {}
    for impl in hook.get_hookimpls():
        items: list[Any] = []

        def register(*args: Any, _items: list[Any] = items, **kwargs: Any) -> None:
            _items.append(args[0] if args else next(iter(kwargs.values()), None))

        try:
            impl.function(register=register)
        except Exception:  # a broken plugin is reported by list_plugins(); the console still starts
            continue
        found[impl.plugin_name] = items
    return found


def load_catalogue() -> Catalogue:
    """Read plugins, tools and models from the plugin manager."""
    from qvl_agent import plugins

    pm = plugins.get_plugin_manager()
    tools = {name: tool.description for name, tool in plugins.get_tools().items()}
    tools_by_plugin = {
        plugin: [getattr(t, "name", str(t)) for t in registered]
        for plugin, registered in _collect(pm.hook.register_tools).items()
    }
    models = [str(name) for names in _collect(pm.hook.register_models).values() for name in names]

    entries: list[PluginEntry] = []
    for info in plugins.list_plugins():
        name = getattr(info, "name", str(info))
        impl_name = next((p for p in tools_by_plugin if p == name or p.endswith(f".{name}")), None)
        entries.append(
            PluginEntry(
                name=name,
                version=getattr(info, "version", None),
                tools=[t for t in tools_by_plugin.get(impl_name or name, []) if t in tools],
                failed=bool(getattr(info, "failed", False)),
                error=getattr(info, "error", None),
            )
        )
    # tool registrations from plugins list_plugins() does not name (e.g. registered by a test) still count
    listed = {e.name for e in entries}
    for plugin, names in tools_by_plugin.items():
        if plugin not in listed and not any(plugin.endswith(f".{n}") for n in listed):
            entries.append(PluginEntry(name=plugin, tools=[t for t in names if t in tools]))
    return Catalogue(plugins=entries, tools=tools, models=list(dict.fromkeys(models)))
