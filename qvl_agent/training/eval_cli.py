"""``qvl-agent eval``: score a model on grounding, VQA, multi-image and tool use."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from qvl_agent.cli import model_placement_options, placement
from qvl_agent.model.errors import InputError


def resolve_backend(spec: str, **options: str) -> Any:
    """A ModelBackend for ``demo``, a checkpoint directory, or an OpenAI-compatible server URL; ``options``
    (``device``, ``dtype``) go to a local model."""
    if spec.startswith(("http://", "https://")):
        spec = "openai+" + spec
    try:
        from qvl_agent.plugins import resolve_model
    except ImportError:  # plugin system not available: local checkpoints only
        from qvl_agent.backends import LocalQwenBackend

        return LocalQwenBackend.from_pretrained(spec, **options)
    return resolve_model(spec, **options)


def format_table(summary: dict[str, dict[str, float]]) -> str:
    """A plain-text table of the scores."""
    rows = [("task", "n", "metric", "score")]
    for task, entry in summary.items():
        metric = {"grounding": "acc@IoU0.5"}.get(task, "exact match")
        if task == "tools":
            metric = "call+answer"
        rows.append((task, str(int(entry["n"])), metric, f"{entry['accuracy']:.3f}"))
        if task == "tools":
            for key in ("valid_format", "right_tool", "right_arguments", "final_answer"):
                rows.append(("", "", key, f"{entry[key]:.3f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


@click.command("eval")
@click.option(
    "--model",
    "model_spec",
    default="demo",
    show_default=True,
    help="demo, a checkpoint dir, or a server URL.",
)
@click.option(
    "--task",
    type=click.Choice(["grounding", "vqa", "multi-image", "tools", "caption", "all"]),
    default="all",
    show_default=True,
)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most N questions per task.")
@click.option(
    "--data",
    type=click.Path(),
    help="Qwen-VL JSON/JSONL, RefCOCO-style or VQA JSONL. Default: synthetic held-out.",
)
@click.option(
    "--n-samples",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    help="Held-out synthetic conversations.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Synthetic data seed.")
@click.option("--synthetic", help="Synthetic DataConfig fields as JSON or a .json file.")
@click.option("--grounding-prompt", default="Find {sent}.", show_default=True, help="For RefCOCO-style data.")
@click.option("--output", type=click.Path(dir_okay=False), help="Write scores and predictions as JSON.")
@click.option("--report", type=click.Path(dir_okay=False), help="PNG report (default: next to --output).")
@click.option(
    "--train-log", type=click.Path(exists=True, dir_okay=False), help="log.jsonl to plot a learning curve."
)
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@model_placement_options
def eval_command(**opts: Any) -> None:
    """Evaluate a model on the held-out synthetic split (or your data) and print a table of scores."""
    from tqdm import tqdm

    from qvl_agent.data.format import DataFormatError
    from qvl_agent.training import evaluate
    from qvl_agent.training.report import save_report

    try:
        opts["grounding_prompt"].format(sent="x")
    except (KeyError, IndexError, ValueError):
        raise click.BadParameter(
            "may only contain the placeholder {sent}", param_hint="--grounding-prompt"
        ) from None
    try:
        if opts["data"]:
            items = evaluate.items_from_file(opts["data"], opts["grounding_prompt"])
        else:
            config = None
            if opts["synthetic"]:
                from qvl_agent.data.cli import data_config_option

                config = data_config_option(opts["synthetic"], "--synthetic")
            items = evaluate.synthetic_items(opts["n_samples"], opts["seed"], config)
        items = evaluate.select(items, opts["task"], opts["limit"])
        if not items:
            raise InputError(f"no {opts['task']} questions in the data")
        backend = resolve_backend(opts["model_spec"], **placement(opts["device"], opts["dtype"]))
        results = []
        for item in tqdm(items, desc="eval", unit="q", disable=opts["quiet"], dynamic_ncols=True):
            try:
                results.append(evaluate.run_item(backend, item, max_new_tokens=opts["max_new_tokens"]))
            except Exception as exc:  # a model or server failure: one line naming the question
                first = str(exc).splitlines()[0] if str(exc) else ""
                raise click.ClickException(
                    f"question {item.id} ({item.task}): the model failed: {type(exc).__name__}: {first}"
                ) from None
    except (DataFormatError, InputError, FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc).splitlines()[0]) from None

    summary = evaluate.summarize(results)
    click.echo(format_table(summary))
    if opts["output"]:
        out = Path(opts["output"])
        out.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "model": opts["model_spec"],
            "task": opts["task"],
            "scores": summary,
            "predictions": [r.__dict__ for r in results],
        }
        out.write_text(json.dumps(payload, indent=1), encoding="utf-8")
        click.echo(f"wrote {out}", err=True)
    report = opts["report"] or (str(Path(opts["output"]).with_suffix(".png")) if opts["output"] else None)
    if report:
        examples = evaluate.sample_boxes(items, results)
        save_report(report, summary, title=opts["model_spec"], train_log=opts["train_log"], examples=examples)
        click.echo(f"wrote {report}", err=True)
