"""``qvl-agent serve``: run the OpenAI-compatible server with uvicorn."""

from __future__ import annotations

import click

from qvl_agent.cli import model_placement_options, placement


@click.command()
@click.option(
    "--model",
    "model",
    default="demo",
    show_default=True,
    help="demo | a checkpoint directory | openai+http://host:port/v1 (any spec a register_models plugin knows)",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option(
    "--api-key", default=None, envvar="QVL_AGENT_API_KEY", help="require 'Authorization: Bearer KEY'"
)
@click.option(
    "--model-name", default=None, help="the id clients send as 'model' (default: the backend's name)"
)
@click.option("--protocol", default="react", show_default=True, help="function-calling protocol")
@click.option("--max-concurrency", default=1, show_default=True, type=click.IntRange(min=1))
@click.option("--max-queue", default=16, show_default=True, type=click.IntRange(min=0))
@click.option(
    "--queue-timeout", default=300.0, show_default=True, type=float, help="seconds a request may wait"
)
@click.option("--allow-local-images", is_flag=True, help="let clients name local files as images")
@click.option(
    "--image-dir",
    "image_dirs",
    multiple=True,
    type=click.Path(exists=True, file_okay=False),
    help="with --allow-local-images: only files under these folders (repeatable)",
)
@click.option("--ui", is_flag=True, help="also mount the Gradio console at /ui (needs the 'console' extra)")
@click.option("--log-level", default="info", show_default=True)
@model_placement_options
def serve(
    model: str,
    host: str,
    port: int,
    api_key: str | None,
    model_name: str | None,
    protocol: str,
    max_concurrency: int,
    max_queue: int,
    queue_timeout: float,
    allow_local_images: bool,
    image_dirs: tuple[str, ...],
    ui: bool,
    log_level: str,
    device: str | None,
    dtype: str | None,
) -> None:
    """Serve a model behind an OpenAI-compatible API (chat completions, functions/tools, images, SSE)."""
    import uvicorn

    from qvl_agent.server.app import create_app

    try:
        app = create_app(
            model,
            protocol=protocol,
            model_name=model_name,
            api_key=api_key,
            max_concurrency=max_concurrency,
            max_queue=max_queue,
            queue_timeout=queue_timeout,
            allow_local_images=allow_local_images,
            image_dirs=list(image_dirs) or None,
            model_options=placement(device, dtype),
        )
    except (ValueError, LookupError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    if ui:
        try:
            from qvl_agent.console import mount_console
        except ImportError as exc:
            raise click.ClickException(f"--ui needs the console extra: {exc}") from None
        mount_console(
            app, path="/ui", model=app.state.service.backend, model_options=placement(device, dtype)
        )
        click.echo(f"qvl-agent: console at http://{host}:{port}/ui", err=True)
    click.echo(f"qvl-agent: serving {model!r} at http://{host}:{port}/v1", err=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
