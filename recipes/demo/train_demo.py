"""Train one stage of the demo model (resumable): ``python recipes/demo/train_demo.py STAGE``.

A stage is ``recipes/demo/configs/STAGE.json``::

    {"init": null | "recipes/demo/runs/<previous stage>/final",   # start from scratch or a previous stage
     "model_config": {...},                                          # QWenConfig kwargs (scratch only)
     "spatial_init": {"alpha": 3.0, "pos_scale": 0.5},              # optional (scratch only), see spatial_init.py
     "mix": {...},                                                   # demo_data.MixSpec fields
     "train": {...},                                                 # TrainConfig fields (lr, max_steps, freeze ...)
     "quick_eval": {"per_task": 16, "tasks": ["grounding", "vqa", "multi-image", "tools"]}}

It runs :class:`qvl_agent.training.trainer.Trainer` on the dense stream of :mod:`demo_data` and, at every
evaluation, also scores greedy answers on the first held-out questions of the default synthetic split (the
split ``qvl-agent eval`` uses) -- logged to ``runs/STAGE/log.jsonl`` as ``q_<task>``. Run it again with the
same arguments and it resumes from the newest ``checkpoint-N`` of ``runs/STAGE`` (``--fresh`` starts over).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from demo_data import MixSpec, dense_sample  # noqa: E402

from qvl_agent.training.trainer import (  # noqa: E402
    ConversationSource,
    TrainConfig,
    Trainer,
    latest_checkpoint,
)

QUICK_TASKS = ("grounding", "vqa", "multi-image", "tools")


def load_stage(name_or_path: str) -> dict[str, Any]:
    path = Path(name_or_path)
    if not path.suffix:
        path = HERE / "configs" / f"{name_or_path}.json"
    if not path.is_file():
        raise SystemExit(f"no stage config {path}")
    stage = json.loads(path.read_text())
    stage["name"] = path.stem
    return stage


def quick_items(per_task: int, tasks: tuple[str, ...], n_conversations: int = 300) -> list[Any]:
    """The first ``per_task`` held-out questions of each task (default synthetic split, seed 0)."""
    from qvl_agent.training import evaluate

    items = evaluate.synthetic_items(n_conversations, seed=0)
    return [i for t in tasks for i in [x for x in items if x.task == t][:per_task]]


class DemoTrainer(Trainer):
    """The library trainer, fed with a stage's dense stream and scoring real answers at each evaluation."""

    def __init__(self, config: TrainConfig, stage: dict[str, Any], resume_from: Path | None) -> None:
        super().__init__(config, resume_from=resume_from, progress=False)
        if stage.get("spatial_init") and config.model is None and resume_from is None:
            from spatial_init import spatial_init

            spatial_init(self.model.transformer.visual, **stage["spatial_init"])
        spec = MixSpec(**stage.get("mix", {}))
        self.train_source = ConversationSource(
            synthetic=partial(dense_sample, split="train", seed=config.synthetic_seed, spec=spec)
        )
        quick = stage.get("quick_eval", {})
        self.quick = quick_items(quick.get("per_task", 16), tuple(quick.get("tasks", QUICK_TASKS)))
        self.t_start = time.time()

    def evaluate(self) -> dict[str, float]:
        metrics = super().evaluate()
        metrics.update(self.quick_scores())
        metrics["wall_seconds"] = round(time.time() - self.t_start, 1)
        print(json.dumps({"step": self.step, **metrics}), flush=True)
        return metrics

    @torch.no_grad()
    def quick_scores(self) -> dict[str, float]:
        from qvl_agent.backends import LocalQwenBackend
        from qvl_agent.training import evaluate

        self.model.eval()
        backend = LocalQwenBackend(self.model, self.tokenizer, name="demo-train")
        results = [
            evaluate.run_item(backend, item, max_new_tokens=110 if item.task == "tools" else 60)
            for item in self.quick
        ]
        scores: dict[str, float] = {}
        for task, entry in evaluate.summarize(results).items():
            scores[f"q_{task}"] = round(entry["accuracy"], 3)
            if task == "tools":
                scores["q_tools_format"] = round(entry["valid_format"], 3)
                scores["q_tools_args"] = round(entry["right_arguments"], 3)
        return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", help="stage name (configs/NAME.json) or a config path")
    parser.add_argument("--out", help="run folder (default recipes/demo/runs/STAGE)")
    parser.add_argument("--fresh", action="store_true", help="ignore existing checkpoints")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-steps", type=int, help="override the stage's max_steps")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)

    stage = load_stage(args.stage)
    out = Path(args.out) if args.out else HERE / "runs" / stage["name"]
    train = dict(stage.get("train", {}))
    if args.max_steps:
        train["max_steps"] = args.max_steps
    if stage.get("init"):
        init = Path(stage["init"])
        config = TrainConfig(
            output_dir=str(out), model=str(init if init.is_absolute() else HERE.parents[1] / init), **train
        )
    else:
        config = TrainConfig(output_dir=str(out), model_config=stage["model_config"], **train)
    resume = None if args.fresh else latest_checkpoint(out)
    if resume is not None:
        print(f"resuming from {resume}", flush=True)
    trainer = DemoTrainer(config, stage, resume)
    n_params = sum(p.numel() for p in trainer.model.parameters())
    print(
        f"stage {stage['name']}: {n_params / 1e6:.2f}M parameters, step {trainer.step}/{config.max_steps}",
        flush=True,
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "stage.json").write_text(json.dumps(stage, indent=1))
    trainer.train()


if __name__ == "__main__":
    main()
