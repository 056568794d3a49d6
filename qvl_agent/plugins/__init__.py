"""The plugin host: one pluggy ``PluginManager`` holding the built-in plugins and the installed ones.

Built-in plugins are the modules of this package listed in :data:`BUILTIN_PLUGINS`; they are registered by
module name and use exactly the same hooks (``qvl_agent.hookspecs``) as third-party plugins, which are loaded
from the ``qvl_agent`` entry-point group::

    [project.entry-points.qvl_agent]
    my_plugin = "my_package.plugin_module"

Environment variables:

- ``QVL_AGENT_PLUGINS`` limits which *external* plugins load: unset loads all of them, ``""`` loads none,
  ``"a,b"`` loads only the entry points (or distributions) named ``a`` and ``b``. Built-ins always load.
- ``QVL_AGENT_TRACE=1`` prints every hook call and its result to stderr (pluggy's tracing).

A plugin that fails to import, to register, or whose registration hook raises is logged, listed as failed by
:func:`list_plugins` (and ``qvl-agent plugins``) and skipped; it never takes the process down.

This module is also the API the rest of qvl_agent uses: :func:`get_tools`, :func:`get_protocol`,
:func:`resolve_model`, :func:`fetch_image`, :func:`postprocess`, :func:`format_output`.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import logging
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pluggy
from pydantic import BaseModel, Field

from qvl_agent import hookspecs
from qvl_agent.messages import AgentResponse, ImageLimits, ResponseContext
from qvl_agent.model.errors import ImageLoadError, InputError

if TYPE_CHECKING:
    from PIL import Image

    from qvl_agent.backends import ModelBackend
    from qvl_agent.protocols import FunctionCallProtocol
    from qvl_agent.tools import Tool

logger = logging.getLogger("qvl_agent.plugins")

ENTRY_POINT_GROUP = "qvl_agent"
PLUGINS_ENV = "QVL_AGENT_PLUGINS"
TRACE_ENV = "QVL_AGENT_TRACE"

#: built-in plugin modules, registered in this order (later ones are called first by pluggy)
BUILTIN_PLUGINS: tuple[str, ...] = (
    "qvl_agent.plugins.react",
    "qvl_agent.plugins.fetchers",
    "qvl_agent.plugins.grounding",
    "qvl_agent.plugins.formatters",
    "qvl_agent.plugins.models",
    "qvl_agent.plugins.upstream",
)


class PluginInfo(BaseModel):
    """What ``qvl-agent plugins`` shows about one plugin."""

    name: str
    version: str | None = None
    hooks: list[str] = Field(default_factory=list)
    builtin: bool = False
    source: str | None = None
    failed: bool = False
    error: str | None = None


@dataclass
class ModelRegistration:
    """One ``register_models`` registration."""

    name: str
    factory: Callable[..., ModelBackend]
    matches: Callable[[str], bool] | None = None
    plugin: str | None = None


class PluginManager(pluggy.PluginManager):
    """pluggy's manager plus a record of plugin metadata and failures."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT_NAME)
        self.add_hookspecs(hookspecs)
        #: plugin name -> (version, source, builtin)
        self.meta: dict[str, tuple[str | None, str | None, bool]] = {}
        #: plugin name -> error message, for plugins that failed to import/register or whose hook raised
        self.failures: dict[str, str] = {}

    def record_failure(self, name: str, stage: str, exc: BaseException) -> None:
        message = f"{stage}: {type(exc).__name__}: {exc}"
        if self.failures.get(name) != message:
            logger.warning("plugin %r failed (%s); skipping it", name, message)
        self.failures[name] = message


_pm: PluginManager | None = None
_pm_lock = threading.Lock()


def get_plugin_manager() -> PluginManager:
    """The process-wide plugin manager (created on first use)."""
    global _pm
    if _pm is None:
        with _pm_lock:
            if _pm is None:
                _pm = create_plugin_manager()
    return _pm


def create_plugin_manager(
    load_entry_points: bool = True, allowed: str | None = None, builtins: tuple[str, ...] = BUILTIN_PLUGINS
) -> PluginManager:
    """Build a fresh manager: built-ins, then the entry-point plugins allowed by ``allowed`` (default: the
    ``QVL_AGENT_PLUGINS`` environment variable; see the module docstring)."""
    pm = PluginManager()
    if os.environ.get(TRACE_ENV, "").strip() not in ("", "0", "false", "no"):
        enable_tracing(pm)
    try:
        version: str | None = importlib.metadata.version("qvl-agent")
    except importlib.metadata.PackageNotFoundError:
        version = None
    for module_name in builtins:
        _register_module(pm, module_name, module_name, version=version, builtin=True)
    if load_entry_points:
        load_external_plugins(pm, os.environ.get(PLUGINS_ENV) if allowed is None else allowed)
    return pm


def set_plugin_manager(pm: PluginManager | None) -> PluginManager | None:
    """Replace the process-wide manager (None: rebuild on next use); returns the previous one. For tests."""
    global _pm
    previous, _pm = _pm, pm
    return previous


def enable_tracing(pm: pluggy.PluginManager, write: Callable[[str], Any] | None = None) -> None:
    """Print every hook call and its result (pluggy's tracing) to stderr or ``write``."""
    pm.trace.root.setwriter(write or sys.stderr.write)
    pm.enable_tracing()


def _allowed_names(value: str | None) -> set[str] | None:
    if value is None:
        return None
    return {name.strip() for name in value.split(",") if name.strip()}


def load_external_plugins(pm: PluginManager, allowed: str | None = None) -> None:
    """Register the plugins of the ``qvl_agent`` entry-point group (all when ``allowed`` is None, none for
    ``""``, else those whose entry-point or distribution name is in the comma-separated list)."""
    names = _allowed_names(allowed)
    if names is not None and not names:
        return
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        dist_name = dist.metadata["Name"] if dist is not None else None
        if names is not None and ep.name not in names and dist_name not in names:
            continue
        if pm.get_plugin(ep.name) is not None or ep.name in pm.failures:
            continue
        try:
            plugin = ep.load()
        except Exception as exc:
            pm.meta[ep.name] = (dist.version if dist else None, ep.value, False)
            pm.record_failure(ep.name, "import", exc)
            continue
        _register_object(pm, plugin, ep.name, version=dist.version if dist else None, source=ep.value)


def _register_module(
    pm: PluginManager, name: str, module_name: str, *, version: str | None, builtin: bool
) -> None:
    pm.meta[name] = (version, module_name, builtin)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        pm.record_failure(name, "import", exc)
        return
    _register_object(pm, module, name, version=version, source=module_name, builtin=builtin)


def _register_object(
    pm: PluginManager,
    plugin: object,
    name: str,
    *,
    version: str | None,
    source: str | None,
    builtin: bool = False,
) -> None:
    pm.meta[name] = (version, source, builtin)
    try:
        pm.register(plugin, name=name)
    except Exception as exc:  # bad hook arguments (pluggy validation), duplicate registration
        pm.record_failure(name, "register", exc)
        return
    unknown = sorted(caller.name for caller in pm.get_hookcallers(plugin) or [] if caller.spec is None)
    if unknown:  # most likely a typo in a hook name: refuse the plugin rather than silently ignore the hook
        pm.unregister(plugin)
        known = ", ".join(sorted(n for n in dir(pm.hook) if not n.startswith("_")))
        pm.record_failure(
            name, "register", LookupError(f"unknown hook(s) {', '.join(unknown)} (known: {known})")
        )


# -- calling hooks ------------------------------------------------------------------------------------


def _failed_plugins(pm: PluginManager) -> list[object]:
    return [p for name in pm.failures if (p := pm.get_plugin(name)) is not None]


def _hook(pm: PluginManager, name: str) -> Any:
    """The hook caller for ``name``, leaving out plugins that failed."""
    failed = _failed_plugins(pm)
    if failed:
        return pm.subset_hook_caller(name, remove_plugins=failed)
    return getattr(pm.hook, name)


def _prune(pm: PluginManager) -> None:
    """Forget failures of plugins that were unregistered (per-test plugins) and never loaded by us."""
    for name in list(pm.failures):
        if name not in pm.meta and pm.get_plugin(name) is None:
            del pm.failures[name]


def _call_each(
    pm: PluginManager, hook_name: str, per_plugin: dict[str, Callable[[str], Any]] | None = None
) -> list[tuple[str, Any]]:
    """Call a registration hook plugin by plugin, in registration order (built-ins first), recording and
    skipping plugins that raise. ``per_plugin`` maps hook arguments to ``f(plugin_name)`` building the value
    for each plugin (its own ``register`` callback). Returns ``(plugin name, result)`` pairs."""
    _prune(pm)
    results: list[tuple[str, Any]] = []
    for impl in getattr(pm.hook, hook_name).get_hookimpls():
        name = impl.plugin_name
        if name in pm.failures:
            continue
        args = {key: make(name) for key, make in (per_plugin or {}).items()}
        others = [p for p in pm.get_plugins() if p is not impl.plugin]
        try:
            result = pm.subset_hook_caller(hook_name, remove_plugins=others)(**args)
        except Exception as exc:
            pm.record_failure(name, f"hook {hook_name}", exc)
            continue
        results.append((name, result[0] if result else None))
    return results


def _tool_registrations(pm: PluginManager) -> list[tuple[str, Tool]]:
    from qvl_agent.tools import Tool

    found: dict[str, list[Tool]] = {}

    def make_register(plugin_name: str) -> Callable[[Tool], None]:
        found[plugin_name] = []

        def register(tool: Tool) -> None:
            if not isinstance(tool, Tool):
                raise TypeError(f"register() expects a qvl_agent.tools.Tool, got {type(tool).__name__}")
            found[plugin_name].append(tool)

        return register

    ok = [name for name, _ in _call_each(pm, "register_tools", {"register": make_register})]
    return [(name, tool) for name in ok for tool in found[name]]


def get_tools(pm: PluginManager | None = None) -> dict[str, Tool]:
    """Every tool registered through ``register_tools``, by name (later plugins override earlier ones)."""
    tools: dict[str, Tool] = {}
    for plugin_name, tool in _tool_registrations(pm or get_plugin_manager()):
        if tool.name in tools:
            logger.info("tool %r from plugin %r replaces an earlier one", tool.name, plugin_name)
        tools[tool.name] = tool
    return tools


def tools_by_plugin(pm: PluginManager | None = None) -> dict[str, list[str]]:
    """Plugin name -> names of the tools it registers."""
    out: dict[str, list[str]] = {}
    for plugin_name, tool in _tool_registrations(pm or get_plugin_manager()):
        out.setdefault(plugin_name, []).append(tool.name)
    return out


def get_models(pm: PluginManager | None = None) -> list[ModelRegistration]:
    """Every ``register_models`` registration, in registration order (built-ins first)."""
    found: dict[str, list[ModelRegistration]] = {}

    def make_register(plugin_name: str) -> Callable[..., None]:
        found[plugin_name] = []

        def register(
            name: str, factory: Callable[..., ModelBackend], matches: Callable[[str], bool] | None = None
        ) -> None:
            if not isinstance(name, str) or not callable(factory):
                raise TypeError("register() expects (name: str, factory: callable, matches: callable | None)")
            found[plugin_name].append(ModelRegistration(name, factory, matches, plugin=plugin_name))

        return register

    ok = [
        name
        for name, _ in _call_each(pm or get_plugin_manager(), "register_models", {"register": make_register})
    ]
    return [registration for name in ok for registration in found[name]]


def resolve_model(
    spec: str | ModelBackend,
    pm: PluginManager | None = None,
    *,
    drop_unaccepted: bool = False,
    **options: Any,
) -> ModelBackend:
    """Build the backend for a model spec: the registration whose name equals ``spec``, else the first whose
    ``matches(spec)`` is true (later plugins first, so they can override built-ins).

    ``options`` (e.g. ``device="cuda"``, ``dtype="bf16"`` for a model that runs in this process) go to the
    factory; a factory that does not take one of them is an :class:`InputError` naming it, or, with
    ``drop_unaccepted``, gets only the options it takes (the console's model picker: ``--device`` applies to
    the local models among its choices, not to a remote one)."""
    from qvl_agent.backends import ModelBackend

    if isinstance(spec, ModelBackend):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise InputError(f"a model spec must be a non-empty string, got {spec!r}")
    registrations = list(reversed(get_models(pm)))
    chosen = next((r for r in registrations if r.name == spec), None)
    if chosen is None:
        for registration in registrations:
            try:
                if registration.matches is not None and registration.matches(spec):
                    chosen = registration
                    break
            except Exception as exc:
                logger.warning(
                    "model matcher %r of plugin %r raised %r", registration.name, registration.plugin, exc
                )
    if chosen is None:
        known = ", ".join(sorted({r.name for r in registrations})) or "none"
        raise InputError(f"no plugin provides a model for {spec!r} (registered models: {known})")
    if options:
        unknown = _unaccepted_options(chosen.factory, options)
        if unknown and drop_unaccepted:
            options = {name: value for name, value in options.items() if name not in unknown}
        elif unknown:
            raise InputError(
                f"model {spec!r} (registered as {chosen.name!r} by plugin {chosen.plugin!r}) takes no "
                f"{', '.join(unknown)} option: those apply to models that run in this process"
            )
    return chosen.factory(spec, **options)


def _unaccepted_options(factory: Callable[..., Any], options: dict[str, Any]) -> list[str]:
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # a builtin or C callable: let the call itself decide
        return []
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return []
    names = {p.name for p in parameters if p.kind is not inspect.Parameter.POSITIONAL_ONLY}
    return sorted(set(options) - names)


def get_protocols(pm: PluginManager | None = None) -> dict[str, FunctionCallProtocol]:
    """Every function-calling protocol, by name (later plugins override earlier ones)."""
    from qvl_agent.protocols import FunctionCallProtocol

    pm = pm or get_plugin_manager()
    protocols: dict[str, FunctionCallProtocol] = {}
    for plugin_name, result in _call_each(pm, "function_call_protocols"):
        items = result or []
        if not isinstance(items, (list, tuple)) or not all(
            isinstance(p, FunctionCallProtocol) for p in items
        ):
            pm.record_failure(
                plugin_name,
                "hook function_call_protocols",
                TypeError("function_call_protocols() must return a list of FunctionCallProtocol instances"),
            )
            continue
        for protocol in items:
            protocols[protocol.name] = protocol
    return protocols


def get_protocol(name: str = "react", pm: PluginManager | None = None) -> FunctionCallProtocol:
    """The protocol called ``name``; raises :class:`InputError` naming the available ones."""
    protocols = get_protocols(pm)
    if name not in protocols:
        known = ", ".join(sorted(protocols)) or "none"
        raise InputError(f"unknown function-calling protocol {name!r} (available: {known})")
    return protocols[name]


def fetch_image(
    source: str | bytes | os.PathLike | Image.Image,
    limits: ImageLimits | None = None,
    pm: PluginManager | None = None,
) -> Image.Image:
    """Load a picture through the ``fetch_image`` plugins; raises :class:`ImageLoadError` when none could."""
    pm = pm or get_plugin_manager()
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    image = _hook(pm, "fetch_image")(source=source, limits=limits or ImageLimits())
    if image is None:
        shown = source if isinstance(source, str) and len(source) < 100 else type(source).__name__
        raise ImageLoadError(f"no image fetcher can load {shown!r} (unsupported source)")
    return image


def postprocess(
    response: AgentResponse,
    context: ResponseContext | dict[str, Any] | None = None,
    pm: PluginManager | None = None,
) -> AgentResponse:
    """Run every ``postprocess_response`` hook on ``response`` (modified in place) and return it."""
    pm = pm or get_plugin_manager()
    if context is None:
        context = ResponseContext()
    elif isinstance(context, dict):
        context = ResponseContext(**context)
    _hook(pm, "postprocess_response")(response=response, context=context)
    return response


def format_output(response: AgentResponse, fmt: str = "text", pm: PluginManager | None = None) -> Any:
    """Render ``response`` in format ``fmt`` (text, markdown, json, image, or a plugin's own)."""
    pm = pm or get_plugin_manager()
    result = _hook(pm, "format_output")(response=response, fmt=fmt)
    if result is None:
        raise InputError(
            f"no plugin can format output as {fmt!r} (built-in formats: text, markdown, json, image)"
        )
    return result


def list_plugins(pm: PluginManager | None = None) -> list[PluginInfo]:
    """Every plugin, loaded or failed, with its version, hooks and error. Runs the registration hooks once so
    that plugins raising there show up as failed."""
    pm = pm or get_plugin_manager()
    _tool_registrations(pm)
    get_models(pm)
    get_protocols(pm)
    infos: list[PluginInfo] = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:
            continue
        version, source, builtin = pm.meta.get(name, (None, getattr(plugin, "__name__", None), False))
        hooks = sorted(caller.name for caller in pm.get_hookcallers(plugin) or [])
        infos.append(
            PluginInfo(
                name=name,
                version=version,
                hooks=hooks,
                builtin=builtin,
                source=source,
                failed=name in pm.failures,
                error=pm.failures.get(name),
            )
        )
    registered = {info.name for info in infos}
    for name, error in pm.failures.items():
        if name in registered or name not in pm.meta:
            continue
        version, source, builtin = pm.meta[name]
        infos.append(
            PluginInfo(name=name, version=version, builtin=builtin, source=source, failed=True, error=error)
        )
    return infos


__all__ = [
    "BUILTIN_PLUGINS",
    "ModelRegistration",
    "PluginInfo",
    "PluginManager",
    "create_plugin_manager",
    "enable_tracing",
    "fetch_image",
    "format_output",
    "get_models",
    "get_plugin_manager",
    "get_protocol",
    "get_protocols",
    "get_tools",
    "list_plugins",
    "load_external_plugins",
    "postprocess",
    "resolve_model",
    "set_plugin_manager",
    "tools_by_plugin",
]
