"""``qvl-agent chat``: run the agent loop from the terminal.

One-shot when a PROMPT is given, otherwise an interactive loop (``/image PATH`` attaches a picture to the next
message, ``/reset`` starts over, ``/quit`` or Ctrl-D leaves). Without tools the answer streams to stdout; with
tools the model's thoughts and the tool calls stream to stderr and the final answer goes to stdout, so the
output can be piped. Exit status: 0 answered, 1 error (one line on stderr), 3 the step budget ran out.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from qvl_agent.cli import model_placement_options, placement
from qvl_agent.model.errors import QwenVLError


def _err(text: str, **style: Any) -> None:
    click.secho(text, err=True, **style)


def _run_turn(
    agent: Any, conversation: list[Any], images: list[str], gen: dict[str, Any], as_json: bool
) -> Any:
    """Run one user turn, printing as it goes; returns the AgentResult."""
    from qvl_agent.agent import FinalAnswer, StepStarted, TextDelta, ToolCallStarted, ToolResultEvent

    live_to_stdout = not agent.tools and not as_json
    result = None
    for event in agent.stream(conversation, images=images or None, **gen):
        if isinstance(event, StepStarted) and event.step > 0 and not live_to_stdout:
            _err("")
        elif isinstance(event, TextDelta):
            if live_to_stdout:
                click.echo(event.text, nl=False)
            else:
                click.secho(event.text, err=True, nl=False, dim=True)
        elif isinstance(event, ToolCallStarted):
            _err("")
            _err(f"→ {event.tool}({event.arguments})", fg="cyan")
        elif isinstance(event, ToolResultEvent):
            pictures = f" [+{len(event.images)} picture(s)]" if event.images else ""
            _err(f"← {event.content}{pictures}", fg="red" if event.is_error else "green")
        elif isinstance(event, FinalAnswer):
            result = event.result
    assert result is not None
    if as_json:
        click.echo(result.model_dump_json(indent=2, exclude={"messages"}))
    elif live_to_stdout and result.stopped == "answer":
        click.echo()
    else:
        if not live_to_stdout:
            _err("")
        click.echo(result.text)
    if not as_json:
        for box in result.boxes:
            where = f" on picture {box.image_index + 1}" if box.image_index is not None else ""
            pixels = f" = pixels {[round(v) for v in box.pixels]}" if box.pixels else ""
            _err(f"box {box.label or ''!s} {box.norm}{pixels}{where}", fg="magenta")
    return result


@click.command("chat")
@click.argument("prompt", required=False)
@click.option(
    "--model", "-m", default="demo", show_default=True, help="demo, a checkpoint directory or a URL spec"
)
@click.option("--image", "-i", "images", multiple=True, help="a picture (path, URL); repeatable")
@click.option("--tool", "-t", "tools", multiple=True, help="a tool installed by a plugin; repeatable")
@click.option("--system", "-s", default=None, help="system message")
@click.option(
    "--max-steps", default=5, show_default=True, type=click.IntRange(min=1), help="most model calls"
)
@click.option("--max-new-tokens", default=None, type=click.IntRange(min=1), help="most tokens per model call")
@click.option("--temperature", default=None, type=click.FloatRange(min=0), help="0 for greedy decoding")
@click.option("--json", "as_json", is_flag=True, help="print the result (answer, boxes, trace) as JSON")
@model_placement_options
def chat(
    prompt: str | None,
    model: str,
    images: tuple[str, ...],
    tools: tuple[str, ...],
    system: str | None,
    max_steps: int,
    max_new_tokens: int | None,
    temperature: float | None,
    as_json: bool,
    device: str | None,
    dtype: str | None,
) -> None:
    """Chat with a model, optionally with pictures and tools.

    \b
    qvl-agent chat --image scene.png "What is in the picture?"
    qvl-agent chat --tool calculator "What is 17 * 23?"
    qvl-agent chat --model /path/to/Qwen-VL-Chat          # interactive
    """
    from qvl_agent import plugins
    from qvl_agent.agent import Agent
    from qvl_agent.messages import Message

    gen = {
        k: v
        for k, v in {"max_new_tokens": max_new_tokens, "temperature": temperature}.items()
        if v is not None
    }
    try:
        backend = plugins.resolve_model(model, **placement(device, dtype))
        agent = Agent(model=backend, tools=list(tools), system=system, max_steps=max_steps)
        if prompt is not None:
            result = _run_turn(agent, [Message(role="user", content=prompt)], list(images), gen, as_json)
            if result.stopped == "max_steps":
                sys.exit(3)
            return
        _interactive(agent, list(images), gen, as_json)
    except (QwenVLError, ValueError, TypeError, OSError) as exc:
        raise click.ClickException(_one_line(exc)) from None


def _interactive(agent: Any, images: list[str], gen: dict[str, Any], as_json: bool) -> None:
    from qvl_agent.messages import Message

    _err("Chatting; /image PATH attaches a picture, /reset starts over, /quit leaves.", dim=True)
    conversation: list[Any] = []
    pending = list(images)
    while True:
        try:
            line = input("> " if sys.stdin.isatty() else "")
        except EOFError:
            return
        line = line.strip()
        if not line:
            continue
        if line in ("/quit", "/exit"):
            return
        if line == "/reset":
            conversation, pending = [], []
            _err("(conversation cleared)", dim=True)
            continue
        if line.startswith("/image"):
            path = line[len("/image") :].strip()
            if not path:
                _err("usage: /image PATH", fg="red")
            else:
                pending.append(path)
            continue
        try:
            result = _run_turn(
                agent, [*conversation, Message(role="user", content=line)], pending, gen, as_json
            )
        except (QwenVLError, ValueError, TypeError, OSError) as exc:
            # a bad picture or prompt ends this turn, not the session
            _err(f"Error: {_one_line(exc)}", fg="red")
            pending = []
            continue
        conversation, pending = result.messages, []


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
