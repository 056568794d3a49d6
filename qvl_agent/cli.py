"""The ``qvl-agent`` command line: a thin shell over the library.

Each subcommand lives next to the code it drives (``qvl_agent/<area>/cli.py``) and is imported only when
invoked, so ``qvl-agent --help`` stays fast and a missing optional extra only breaks its own command.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

# command name -> "module:attribute" of a click command
COMMANDS: dict[str, str] = {
    "chat": "qvl_agent.chat_cli:chat",
    "plugins": "qvl_agent.plugins_cli:plugins_command",
    "tools": "qvl_agent.plugins_cli:tools_command",
    "serve": "qvl_agent.server.cli:serve",
    "console": "qvl_agent.console.cli:console",
    "train": "qvl_agent.training.cli:train",
    "eval": "qvl_agent.training.eval_cli:eval_command",
    "data": "qvl_agent.data.cli:data",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            message = f"'{cmd_name}' is unavailable: {exc}. Install the extras: pip install 'qvl-agent[all]'"

            # listed in --help, failing with one clear line only when actually invoked
            @click.command(
                cmd_name, help=f"(unavailable: {exc})", context_settings={"ignore_unknown_options": True}
            )
            @click.argument("args", nargs=-1, type=click.UNPROCESSED)
            def unavailable(args: tuple[str, ...]) -> None:
                raise click.ClickException(message)

            return unavailable
        return getattr(module, attr)


def model_placement_options(command: F) -> F:
    """``--device`` / ``--dtype`` for a command that loads a model; read them back with :func:`placement`."""
    command = click.option(
        "--dtype",
        type=click.Choice(["fp32", "bf16", "fp16"]),
        default=None,
        help="precision of a local model  [default: the checkpoint's]",
    )(command)
    return click.option(
        "--device",
        default=None,
        help="where a local model runs: auto, cpu, cuda, cuda:1 …  [default: auto, the GPU when present]",
    )(command)


def placement(device: str | None, dtype: str | None) -> dict[str, str]:
    """The options given with ``--device`` / ``--dtype``, for :func:`qvl_agent.plugins.resolve_model`."""
    return {name: value for name, value in (("device", device), ("dtype", dtype)) if value is not None}


@click.group(cls=LazyGroup)
@click.version_option(package_name="qvl-agent")
def main() -> None:
    """qvl-agent: a plugin-oriented multimodal agent framework around Qwen-VL."""


if __name__ == "__main__":
    main()
