"""``qvl-agent data``: write synthetic datasets to disk, check a dataset, train a small vocabulary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click


def json_object_option(value: str | None, what: str) -> dict[str, Any] | None:
    """A JSON object given inline or as a path to a ``.json`` file (``what`` names the option in errors)."""
    if value is None:
        return None
    text = Path(value).read_text(encoding="utf-8") if Path(value).is_file() else value
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"{what} is neither a JSON file nor inline JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise click.BadParameter(f"{what} must be a JSON object")
    return data


def data_config_option(value: str | None, what: str = "--config"):
    """A :class:`DataConfig` from a JSON option (inline or a file); the defaults when not given."""
    from qvl_agent.data.synthetic import DataConfig

    fields = json_object_option(value or None, what)
    if not fields:
        return DataConfig()
    try:
        return DataConfig.from_dict(fields)
    except (TypeError, ValueError) as exc:
        raise click.BadParameter(f"{what}: {exc}") from None


@click.group("data")
def data() -> None:
    """Synthetic multimodal conversations in the Qwen-VL fine-tuning format."""


@data.command("generate")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option(
    "--n", "n", type=click.IntRange(min=0), default=1000, show_default=True, help="Training samples."
)
@click.option(
    "--n-heldout",
    type=click.IntRange(min=0),
    default=200,
    show_default=True,
    help="Held-out samples (0: none).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--config", help="DataConfig fields as JSON or a .json file.")
def generate(out: str, n: int, n_heldout: int, seed: int, config: str | None) -> None:
    """Write OUT/train.json, OUT/heldout.json and OUT/images/*.png."""
    from qvl_agent.data.synthetic import write_dataset

    data_config = data_config_option(config)
    if n == 0 and n_heldout == 0:
        raise click.UsageError("nothing to generate: --n and --n-heldout are both 0")
    for split, count in (("train", n), ("heldout", n_heldout)):
        if count > 0:
            path = write_dataset(out, count, split, seed, data_config, progress=True)
            click.echo(f"{path} ({count} conversations)")


@data.command("check")
@click.argument("path", type=click.Path())
def check(path: str) -> None:
    """Validate a Qwen-VL fine-tuning JSON/JSONL file (roles, <img> tags, pictures exist)."""
    from qvl_agent.data.format import DataFormatError, load_conversations

    try:
        conversations = load_conversations(path)
    except DataFormatError as exc:
        raise click.ClickException(str(exc)) from None
    turns = sum(len(c.turns) // 2 for c in conversations)
    images = sum(len(c.images) for c in conversations)
    click.echo(f"{path}: OK, {len(conversations)} conversations, {turns} question turns, {images} pictures")


@data.command("vocab")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Ranks file to write.")
@click.option(
    "--n",
    "n",
    type=click.IntRange(min=1),
    default=20000,
    show_default=True,
    help="Synthetic samples to learn from.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--vocab-size",
    type=click.IntRange(min=257),
    default=3000,
    show_default=True,
    help="Upper bound on ranks.",
)
@click.option("--config", help="DataConfig fields as JSON or a .json file.")
def vocab(out: str, n: int, seed: int, vocab_size: int, config: str | None) -> None:
    """Train a small byte-level BPE vocabulary (qwen.tiktoken format) on synthetic conversations."""
    from qvl_agent.data.vocab import build_vocab, read_tiktoken

    path = build_vocab(out, n, seed, vocab_size, data_config_option(config))
    click.echo(f"{path}: {len(read_tiktoken(path))} ranks")


__all__: list[Any] = ["data"]
