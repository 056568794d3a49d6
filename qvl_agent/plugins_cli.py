"""``qvl-agent plugins`` and ``qvl-agent tools``: what the plugin manager loaded, and the tools it offers."""

from __future__ import annotations

import json

import click


@click.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def plugins_command(as_json: bool) -> None:
    """List plugins (built-in and installed) with their version, hooks and failures."""
    from qvl_agent import plugins

    infos = plugins.list_plugins()
    tools = plugins.tools_by_plugin()
    if as_json:
        rows = []
        for info in infos:
            row = info.model_dump()
            row["tools"] = tools.get(info.name, [])
            rows.append(row)
        click.echo(json.dumps(rows, indent=2))
        return
    for info in infos:
        kind = "built-in" if info.builtin else "plugin"
        version = f" {info.version}" if info.version else ""
        status = click.style(" FAILED", fg="red") if info.failed else ""
        click.echo(f"{info.name}{version} ({kind}){status}")
        if info.hooks:
            click.echo(f"  hooks: {', '.join(info.hooks)}")
        if tools.get(info.name):
            click.echo(f"  tools: {', '.join(tools[info.name])}")
        if info.error:
            click.echo(f"  error: {info.error}")


@click.command("tools")
@click.option("--json", "as_json", is_flag=True, help="Print the tools and their JSON schemas as JSON.")
def tools_command(as_json: bool) -> None:
    """List the tools the plugins register, with their parameter schemas."""
    from qvl_agent import plugins

    owners = {tool: plugin for plugin, names in plugins.tools_by_plugin().items() for tool in names}
    tools = plugins.get_tools()
    if as_json:
        rows = [
            {
                "name": tool.name,
                "description": tool.description,
                "parameters": tool.parameters,
                "plugin": owners.get(tool.name),
                "timeout": tool.timeout,
            }
            for tool in tools.values()
        ]
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    if not tools:
        click.echo("No tools registered. Install a plugin that provides some (see `qvl-agent plugins`).")
        return
    for tool in tools.values():
        click.echo(f"{tool.name} (from {owners.get(tool.name, '?')})")
        if tool.description:
            click.echo(f"  {tool.description}")
        click.echo("  parameters: " + json.dumps(tool.parameters, ensure_ascii=False))
