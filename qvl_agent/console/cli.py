"""``qvl-agent console``: serve the Gradio agent console."""

from __future__ import annotations

import click

from qvl_agent.cli import model_placement_options, placement


@click.command("console")
@click.option(
    "--model",
    "-m",
    default="demo",
    show_default=True,
    help='Model spec: "demo", a checkpoint folder or "openai+http://host:port/v1".',
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=7860, show_default=True, type=int, help="Port to listen on.")
@click.option(
    "--max-steps", default=5, show_default=True, type=click.IntRange(1, 50), help="Agent step limit."
)
@model_placement_options
def console(model: str, host: str, port: int, max_steps: int, device: str | None, dtype: str | None) -> None:
    """Open the multimodal agent console in the browser: chat with pictures, watch tool calls and boxes."""
    from qvl_agent import plugins
    from qvl_agent.console.app import launch_console

    options = placement(device, dtype)
    # load the model before serving: a wrong spec or a broken checkpoint is one line here, not a page that
    # fails on its first message
    try:
        backend = plugins.resolve_model(model, **options)
    except Exception as exc:
        raise click.ClickException(f"cannot load model {model!r}: {_first_line(exc)}") from None
    click.echo(f"qvl-agent console: model {model!r} on http://{host}:{port}")
    try:
        launch_console(backend, host=host, port=port, max_steps=max_steps, model_options=options)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__
