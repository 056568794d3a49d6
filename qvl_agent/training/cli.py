"""``qvl-agent train``: fine-tune a checkpoint, or train a from-scratch model, on Qwen-VL-format conversations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from qvl_agent.data.cli import json_object_option
from qvl_agent.model.errors import InputError


def _absolute(path: str | None) -> str | None:
    """An existing path made absolute, so ``--resume`` works from any folder (others are left for the checks)."""
    return str(Path(path).resolve()) if path and Path(path).exists() else path


@click.command("train")
@click.option("--model", "model", type=click.Path(), help="Checkpoint directory to fine-tune.")
@click.option(
    "--config", "model_config", help="From-scratch model: QWenConfig fields as JSON or a .json file."
)
@click.option(
    "--vocab", "vocab_file", type=click.Path(exists=True, dir_okay=False), help="Ranks file for --config."
)
@click.option(
    "--data", type=click.Path(), help="Training data (Qwen-VL JSON/JSONL). Default: synthetic, on the fly."
)
@click.option("--eval-data", type=click.Path(), help="Held-out data in the same format.")
@click.option("--synthetic", help="Synthetic DataConfig fields as JSON or a .json file.")
@click.option("--synthetic-seed", type=int, default=0, show_default=True)
@click.option(
    "--eval-samples",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="Held-out synthetic conversations.",
)
@click.option(
    "-o", "--output-dir", required=True, type=click.Path(), help="Where checkpoints and log.jsonl go."
)
@click.option(
    "--max-steps", type=click.IntRange(min=1), default=None, help="Optimizer steps in total (default 100)."
)
@click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True)
@click.option(
    "--grad-accum",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Micro-batches per optimizer step.",
)
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option(
    "--visual-lr-scale", type=float, default=1.0, show_default=True, help="LR multiplier, vision side."
)
@click.option("--warmup-steps", type=click.IntRange(min=0), default=10, show_default=True)
@click.option("--weight-decay", type=float, default=0.0, show_default=True)
@click.option("--max-length", type=click.IntRange(min=16), default=2048, show_default=True)
@click.option(
    "--freeze",
    multiple=True,
    type=click.Choice(["vit", "resampler", "lm"]),
    help="Freeze a part (repeatable).",
)
@click.option("--lora/--full", default=False, help="LoRA adapters on the LM (peft) or full fine-tuning.")
@click.option("--lora-r", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--lora-alpha", type=click.IntRange(min=1), default=16, show_default=True)
@click.option(
    "--no-merge",
    is_flag=True,
    help="With --lora: final/ holds only the adapter (qvl-agent eval merges it into its base on load).",
)
@click.option("--log-every", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--eval-every", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--save-every", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--device", default="auto", show_default=True, help="auto (GPU when present), cpu, cuda, cuda:1 …"
)
@click.option(
    "--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default="float32", show_default=True
)
@click.option("--resume", is_flag=True, help="Continue from the latest checkpoint in --output-dir.")
@click.option(
    "--resume-from", type=click.Path(exists=True, file_okay=False), help="Continue from this checkpoint."
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train(**opts: Any) -> None:
    """Train on conversations in the original Qwen-VL fine-tuning format.

    \b
    From scratch on synthetic data:
      qvl-agent train --config tiny.json -o runs/tiny --max-steps 2000
    Fine-tune a checkpoint with LoRA on your data:
      qvl-agent train --model ./Qwen-VL-Chat --data train.json --lora -o runs/lora
    Continue a run later (same or larger --max-steps):
      qvl-agent train -o runs/tiny --resume --max-steps 4000
    """
    from qvl_agent.data.format import DataFormatError
    from qvl_agent.training.trainer import TrainConfig, Trainer, latest_checkpoint, resume_config

    try:
        resume_from = opts["resume_from"]
        if opts["resume"] and not resume_from:
            found = latest_checkpoint(opts["output_dir"])
            if found is None:
                raise InputError(f"--resume: no checkpoint-* with trainer state in {opts['output_dir']}")
            resume_from = str(found)
        if resume_from:
            config = resume_config(resume_from, max_steps=opts["max_steps"], output_dir=opts["output_dir"])
        else:
            config = TrainConfig(
                output_dir=opts["output_dir"],
                model=_absolute(opts["model"]),
                model_config=json_object_option(opts["model_config"], "--config"),
                vocab_file=_absolute(opts["vocab_file"]),
                data=_absolute(opts["data"]),
                eval_data=_absolute(opts["eval_data"]),
                synthetic=json_object_option(opts["synthetic"], "--synthetic") or {},
                synthetic_seed=opts["synthetic_seed"],
                eval_samples=opts["eval_samples"],
                max_steps=100 if opts["max_steps"] is None else opts["max_steps"],
                batch_size=opts["batch_size"],
                grad_accum=opts["grad_accum"],
                lr=opts["lr"],
                visual_lr_scale=opts["visual_lr_scale"],
                warmup_steps=opts["warmup_steps"],
                weight_decay=opts["weight_decay"],
                max_length=opts["max_length"],
                freeze=list(opts["freeze"]),
                lora=opts["lora"],
                lora_r=opts["lora_r"],
                lora_alpha=opts["lora_alpha"],
                merge_lora=not opts["no_merge"],
                log_every=opts["log_every"],
                eval_every=opts["eval_every"],
                save_every=opts["save_every"],
                seed=opts["seed"],
                device=opts["device"],
                dtype=opts["dtype"],
            )
        trainer = Trainer(config, resume_from=resume_from, progress=not opts["quiet"])
        if resume_from:
            click.echo(f"resuming from {resume_from} at step {trainer.step}", err=True)
        last = trainer.train()
    except (DataFormatError, InputError, FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    click.echo(json.dumps(last))
    click.echo(f"saved {Path(config.output_dir) / 'final'}", err=True)
