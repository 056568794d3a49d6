"""Train the demo model from scratch: ``python recipes/demo/train.py recipes/demo/configs/demo.json``.

Two phases, one config (see ``configs/demo.json``):

1. ``vision``: the vision tower + resampler alone, on rendered scenes, with a dense linear head
   (:mod:`dense_targets`) telling each image token what object it holds and where. Cheap (no language
   model) and direct: every token of every picture is supervised.
2. ``joint``: the whole model on the chat data of :mod:`demo_data` (many questions per picture, two-picture
   questions, ReAct tool episodes), the dense head still attached to the image tokens (``aux_weight``) so the
   vision side keeps carrying the content while the language model learns to read it.

Batches of one step are of one kind (``single`` / ``multi`` / ``tools``) so short and long conversations
are not padded together. Every sample is a pure function of its index, so a run resumes exactly
(``--resume``); ``--device cuda`` runs the same computation on a GPU. The seconds per step on 2 CPU cores
are measured with ``--time-steps N``. Writes ``OUT/log.jsonl``, ``OUT/checkpoint`` (resume state) and
``OUT/final`` (a loadable checkpoint; ``export.py`` ships it).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import math
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from attention_targets import (  # noqa: E402
    MAX_TARGETS,
    AttentionSupervision,
    count_targets,
    count_turns,
    picture_targets,
    query_targets,
    question_targets,
    stack_pairs,
    supervised_attentions,
    thought_count_targets,
    thought_counts,
    turn_objects,
)
from demo_data import MixSpec, dense_sample  # noqa: E402
from dense_targets import DenseHead, scene_targets, stack_targets  # noqa: E402
from digit_weights import digit_loss_weights, weighted_lm_loss  # noqa: E402
from spatial_init import spatial_init  # noqa: E402

from qvl_agent.data.scenes import SceneConfig, random_scene, render_scene  # noqa: E402
from qvl_agent.training.encoding import collate, encode_conversation  # noqa: E402
from qvl_agent.training.trainer import TrainConfig, build_model, warmup_cosine  # noqa: E402


class VisionData(Dataset):
    """Picture ``i``: a random scene, its pixels and its dense targets."""

    def __init__(self, seed: int, scene: dict[str, Any], processor, grid: int, batch: int) -> None:
        self.seed, self.scene, self.processor, self.grid, self.batch = (
            seed,
            SceneConfig(**scene),
            processor,
            grid,
            batch,
        )

    def __len__(self) -> int:
        return 1 << 30

    def __getitem__(self, step: int) -> dict[str, Any]:
        scenes = [
            random_scene(random.Random(f"qvl-demo-vision/{self.seed}/{step}/{j}"), self.scene)
            for j in range(self.batch)
        ]
        return {
            "pixel_values": self.processor([render_scene(s) for s in scenes]),
            "targets": stack_targets([scene_targets(s, self.grid) for s in scenes]),
        }


class ChatData(Dataset):
    """Step ``i``: ``batch`` conversations of one kind, encoded, with pictures and dense targets."""

    def __init__(
        self,
        seed: int,
        spec: MixSpec,
        tokenizer,
        processor,
        grid: int,
        batch: int,
        max_length: int,
        curriculum: list[dict[str, Any]] | None = None,
        attention: dict[str, Any] | None = None,
        digit_weights: list[float] | None = None,
    ):
        """``attention``: the config's ``joint.attention``; also emit :mod:`attention_targets` pairs (object
        binding, and where set the ``question`` gather and ``picture`` label targets). ``digit_weights``: the
        config's ``joint.digit_weights``; also emit ``loss_weights`` (:mod:`digit_weights`)."""
        self.digit_weights = digit_weights
        self.seed, self.spec, self.tokenizer, self.processor = seed, spec, tokenizer, processor
        # the most keys per query of each supervised attention (``attn``: object binding)
        self.targets = {
            prefix: sub.get("max_targets", MAX_TARGETS[prefix])
            for prefix, sub in supervised_attentions(attention).items()
        }
        # counting turns leave the object-binding targets when both supervise the same head (they disagree)
        bind = attention or {}
        count = bind.get("count")
        self.count_replaces_binding = (
            bool(count) and count["head"] == bind["head"] and bool(set(count["layers"]) & set(bind["layers"]))
        )
        self.curriculum = curriculum or []
        self.grid, self.batch, self.max_length = grid, batch, max_length
        # cells per named object in the binding targets: 1 (its centre cell) or 2 (the 2x2 around it)
        self.spread = bind.get("spread", 1)
        # each count in a calculator thought gets its own binding and question targets (thought_count_targets)
        self.thought_counts = bool(bind.get("thought_counts"))

    def __len__(self) -> int:
        return 1 << 30

    def spec_at(self, step: int) -> MixSpec:
        """The mix of ``step``: the first curriculum entry with ``step < until``, else the base mix."""
        for entry in self.curriculum:
            if step < entry["until"]:
                return self.spec.stage(entry)
        return self.spec

    def __getitem__(self, step: int) -> dict[str, Any]:
        rng = random.Random(f"qvl-demo-kind/{self.seed}/{step}")
        base = self.spec_at(step)
        kinds = list(base.kinds)
        kind = rng.choices(kinds, weights=[base.kinds[k] for k in kinds])[0]
        spec = dataclasses.replace(base, kinds={kind: 1.0})
        encoded, pictures, targets = [], [], []
        pairs: dict[str, list] = {prefix: [] for prefix in self.targets}
        for j in range(self.batch):
            sample = dense_sample(step * self.batch + j, "train", self.seed, spec)
            enc = encode_conversation(self.tokenizer, sample.conversations, max_length=self.max_length)
            encoded.append(enc)
            if pairs:
                turns = turn_objects(sample, self.grid, spec.coord_step, self.spread, spec.coord_snap)
                # each count a calculator thought writes: (query, its kind's image tokens, the word naming it)
                thought = (
                    thought_count_targets(
                        enc.input_ids,
                        enc.labels,
                        enc.image_refs,
                        thought_counts(sample, self.grid),
                        self.tokenizer,
                    )
                    if self.thought_counts
                    else []
                )
                counted: list[tuple[int, list[int]]] = []
                skip: frozenset[int] = frozenset()
                if "count" in pairs:  # counting turns also get their own (uniform) targets
                    counts = count_turns(sample, self.grid)
                    if self.count_replaces_binding:
                        skip = frozenset(i for i, c in enumerate(counts) if c is not None)
                    counted = count_targets(
                        enc.input_ids,
                        enc.labels,
                        enc.image_refs,
                        counts,
                        self.tokenizer,
                        self.targets["count"],
                    )
                    counted += [(q, [0, *k]) for q, k, _ in thought if len(k) < self.targets["count"]]
                    pairs["count"].append(counted)
                objects = query_targets(
                    enc.input_ids,
                    enc.labels,
                    enc.image_refs,
                    turns,
                    self.tokenizer,
                    self.targets["attn"],
                    skip,
                )
                own = {q for q, _, _ in thought}
                if own:
                    objects = [p for p in objects if p[0] not in own]
                    if not self.count_replaces_binding:
                        objects += [
                            (q, sorted(set(k)))
                            for q, k, _ in thought
                            if 0 < len(set(k)) <= self.targets["attn"]
                        ]
                pairs["attn"].append(objects)
                if "question" in pairs:
                    bound = {q for q, _ in objects}
                    gathered = question_targets(
                        enc.input_ids,
                        objects + [p for p in counted if p[0] not in bound],
                        self.tokenizer,
                        self.targets["question"],
                    )
                    pairs["question"].append(
                        [p for p in gathered if p[0] not in own] + [(q, w) for q, _, w in thought if w]
                    )
                if "picture" in pairs:
                    pairs["picture"].append(picture_targets(enc.input_ids, self.tokenizer))
            for ref in enc.image_refs:
                pictures.append(sample.images[ref])
                targets.append(scene_targets(sample.scene_of.get(ref), self.grid))
        batch = collate(encoded, self.tokenizer.eod_id)
        batch["kind"] = kind
        if self.digit_weights:
            batch["loss_weights"] = digit_loss_weights(batch["input_ids"], self.tokenizer, self.digit_weights)
        for name, rows in pairs.items():
            batch.update(stack_pairs(rows, self.targets[name], prefix=name))
        if pictures:
            batch["pixel_values"] = self.processor(pictures)
            batch["targets"] = stack_targets(targets)
        return batch


def loader(dataset: Dataset, start: int, workers: int) -> DataLoader:
    indices = range(start, 1 << 30)
    return DataLoader(
        dataset,
        batch_size=None,
        sampler=indices,
        num_workers=workers,
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
    )


def to(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            out[k] = v.to(device, non_blocking=True)
        elif isinstance(v, dict):
            out[k] = to(v, device)
        else:
            out[k] = v
    return out


def log(path: Path, record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")


@torch.no_grad()
@functools.cache
def heldout_items(per_task: int) -> list[Any]:
    """The first ``per_task`` held-out questions of each task (the split ``qvl-agent eval`` scores)."""
    from qvl_agent.training import evaluate

    items = evaluate.synthetic_items(300, seed=0)
    return [
        i
        for t in ("grounding", "vqa", "multi-image", "tools")
        for i in [x for x in items if x.task == t][:per_task]
    ]


def quick_scores(model, tokenizer, per_task: int) -> dict[str, float]:
    """Greedy answers to :func:`heldout_items`, scored by ``qvl-agent eval``'s code."""
    from qvl_agent.backends import LocalQwenBackend
    from qvl_agent.training import evaluate

    chosen = heldout_items(per_task)
    model.eval()
    backend = LocalQwenBackend(model, tokenizer, name="demo-train")
    results = [evaluate.run_item(backend, i, max_new_tokens=110 if i.task == "tools" else 60) for i in chosen]
    model.train()
    scores: dict[str, float] = {}
    for task, entry in evaluate.summarize(results).items():
        scores[f"q_{task}"] = round(entry["accuracy"], 3)
        if task == "tools":
            scores["q_tools_format"] = round(entry["valid_format"], 3)
            scores["q_tools_args"] = round(entry["right_arguments"], 3)
    return scores


def joint_loss(
    model, head: DenseHead, batch: dict[str, Any], watches: list, aux_weight: float, autocast
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss of one joint step and its metrics: the LM loss, each supervised attention (``watches``: (batch
    prefix, :class:`AttentionSupervision`, weight)) and the dense head on the image tokens (``aux_weight``).
    ``autocast``: the context the forward pass runs in."""
    captured: list[torch.Tensor] = []
    hook = model.transformer.visual.register_forward_hook(lambda m, i, o, store=captured: store.append(o))
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(autocast())
            for _, watch, _ in watches:
                stack.enter_context(watch)
            weights = batch.get("loss_weights")
            out = model(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                labels=None if weights is not None else batch["labels"],
                pixel_values=batch.get("pixel_values"),
            )
    finally:
        hook.remove()
    if weights is not None:  # the logs keep the plain mean, comparable across runs
        lm_loss, plain = weighted_lm_loss(out.logits, batch["labels"], weights)
    else:
        lm_loss = out.loss
        plain = lm_loss.detach()
    loss, metrics = lm_loss, {f"loss_{batch['kind']}": plain}
    for prefix, watch, weight in watches:
        if batch[f"{prefix}_query"].numel():
            attn_loss, attn_metrics = watch.loss(batch[f"{prefix}_query"], batch[f"{prefix}_keys"])
            loss = loss + weight * attn_loss
            metrics[f"{prefix}_mass"] = attn_metrics["attn_mass"]
            metrics[f"{prefix}_loss"] = attn_loss.detach()
    if captured and aux_weight > 0:
        aux, aux_metrics = head(captured[0], batch["targets"])
        loss = loss + aux_weight * aux
        metrics.update(aux_metrics)
        metrics["aux_loss"] = aux.detach()
    return loss, metrics


def tied_word_ids(tokenizer, tie_words: bool | list[str]) -> dict[str, list[list[int | None]]]:
    """The dense head's tied tables (``DenseHead``'s ``word_ids``) for a config's ``tie_words``.

    ``true``: colour and shape; a list may add "plural" (shapes also against " squares", ...: the words
    counting questions use), "word" (the written words; quoted, so their tokens have no space) or "letters"
    (the written words that do not start with a digit: "42" and "7" encode as the digits boxes are written
    with, which an image token should not be pulled towards).
    """
    from dense_targets import COLOUR_IDS, SHAPE_IDS

    from qvl_agent.data.scenes import WORDS
    from qvl_agent.data.synthetic import plural

    def first_id(word: str) -> int:
        return tokenizer.encode(" " + ("word" if word == "text" else word))[0]

    tied = ["colour", "shape"] if tie_words is True else list(tie_words)
    if "word" in tied and "letters" in tied:
        raise ValueError('tie_words: "word" and "letters" tie the same class; choose one')
    tables: dict[str, list[list[int | None]]] = {
        "colour": [[first_id(c) for c in COLOUR_IDS]],
        "shape": [[first_id(s) for s in SHAPE_IDS]],
        "word": [[None] + [tokenizer.encode(w)[0] for w in WORDS]],  # class 0: not a word
        "letters": [[None] + [None if w[0].isdigit() else tokenizer.encode(w)[0] for w in WORDS]],
    }
    if "plural" in tied:
        tables["shape"].append([None if s == "text" else first_id(plural(s)) for s in SHAPE_IDS])
    return {("word" if k == "letters" else k): v for k, v in tables.items() if k in tied}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--out", type=Path, help="run folder (default recipes/demo/runs/CONFIG)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=0, help="data-loading processes")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    parser.add_argument("--init", help="start from this checkpoint folder (overrides the config's init)")
    parser.add_argument("--time-steps", type=int, help="time this many steps of each phase, then stop")
    parser.add_argument(
        "--max-minutes", type=float, help="stop after this long, saving the resume state (then --resume)"
    )
    parser.add_argument(
        "--max-steps", type=int, help="stop after this many steps (both phases), saving the resume state"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    torch.backends.cuda.matmul.allow_tf32 = False  # the same arithmetic as on the CPU
    cfg = json.loads(args.config.read_text())
    out = args.out or HERE / "runs" / args.config.stem
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    seed = cfg.get("seed", 0)
    # "autocast": "bfloat16" runs the training forward passes in bfloat16 (weights, optimizer and the
    # losses stay float32); the quick evaluations and the saved model are float32 either way
    dtype = getattr(torch, cfg["autocast"]) if cfg.get("autocast") else None
    autocast = functools.partial(torch.autocast, device.type, dtype=dtype, enabled=dtype is not None)

    init = args.init or cfg.get("init")
    if init:  # continue from a trained checkpoint (e.g. the previous run's final/)
        path = Path(init) if Path(init).is_absolute() else HERE.parents[1] / init
        model, tokenizer = build_model(TrainConfig(output_dir=str(out), model=str(path), seed=seed))
        model.float()
    else:
        model, tokenizer = build_model(
            TrainConfig(output_dir=str(out), model_config=cfg["model_config"], seed=seed)
        )
    visual = model.transformer.visual
    if cfg.get("spatial_init") is not None and not init:
        spatial_init(visual, **cfg["spatial_init"])
    for layer in model.transformer.h[: 0 if init else cfg.get("similarity_init_layers", 0)]:
        # W_k = W_q: each head starts out attending to tokens that look like the one asking
        hidden = model.config.hidden_size
        with torch.no_grad():
            layer.attn.c_attn.weight[hidden : 2 * hidden].copy_(layer.attn.c_attn.weight[:hidden])
    torch.manual_seed(seed + 1)
    word_ids = tied_word_ids(tokenizer, cfg["tie_words"]) if cfg.get("tie_words") else None
    head = DenseHead(visual.output_dim, model.transformer.wte if word_ids else None, word_ids)
    model.to(device)
    head.to(device)
    grid = math.isqrt(visual.n_queries)
    processor = visual.image_processor

    vcfg, jcfg = cfg["vision"], cfg["joint"]
    phases = [("vision", vcfg["steps"]), ("joint", jcfg["steps"])]
    # the patch embedding (``conv1``) may get a smaller learning rate: Adam moves each of its
    # 3*patch*patch weights by about lr per step, and the pixels of a patch are nearly all correlated, so its
    # output moves about (patch area) times faster than a hidden layer's (``patch_lr_scale``, e.g. 0.25 for a
    # 16 px patch against the 8 px one the other settings were tuned with)
    patch_scale = cfg.get("patch_lr_scale", 1.0)
    patch_weight = [visual.conv1.weight] if patch_scale != 1.0 else []  # its own group only when scaled
    vision_params = [p for p in visual.parameters() if all(p is not w for w in patch_weight)]
    vision_params += list(head.parameters())

    def vision_groups(lr: float) -> list[dict[str, Any]]:
        groups = [{"params": vision_params, "lr": lr}]
        return groups + [{"params": patch_weight, "lr": lr * patch_scale}] if patch_weight else groups

    lm_params = [p for n, p in model.named_parameters() if not n.startswith("transformer.visual.")]
    state = {"phase": 0, "step": 0}
    if args.resume and (out / "checkpoint" / "state.pt").is_file():
        saved = torch.load(out / "checkpoint" / "state.pt", weights_only=False)
        model.load_state_dict(saved["model"])
        head.load_state_dict(saved["head"])
        state = saved["state"]
        print(f"resuming at phase {phases[state['phase']][0]} step {state['step']}", flush=True)
    else:
        saved = None
        (out / "log.jsonl").unlink(missing_ok=True)
    (out / "config.json").write_text(json.dumps(cfg, indent=1))
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{n_params / 1e6:.2f}M parameters, {grid}x{grid} image tokens, device {device}", flush=True)
    t_start = time.time()
    steps_taken = 0  # by this invocation, for --max-steps

    for phase_index in range(state["phase"], len(phases)):
        name, total = phases[phase_index]
        offset = sum(steps for _, steps in phases[:phase_index])  # logged steps count both phases
        pc = vcfg if name == "vision" else jcfg
        if name == "vision":
            groups = vision_groups(pc["lr"])
            data = VisionData(seed, pc.get("scene", {}), processor, grid, pc["batch_size"])
        else:
            groups = [{"params": lm_params, "lr": pc["lr"]}]
            if pc["visual_lr_scale"] > 0:
                groups += vision_groups(pc["lr"] * pc["visual_lr_scale"])
            else:  # vision side frozen: no gradients to compute
                for p in vision_params + patch_weight:
                    p.requires_grad_(False)
            spec = MixSpec(**pc["mix"])
            data = ChatData(
                seed,
                spec,
                tokenizer,
                processor,
                grid,
                pc["batch_size"],
                pc.get("max_length", 2048),
                pc.get("curriculum"),
                pc.get("attention"),
                pc.get("digit_weights"),
            )
            # (batch prefix, the hooked head, loss weight) of each supervised attention
            watches = [
                (
                    prefix,
                    AttentionSupervision(model, sub["layers"], sub["head"], sub.get("uniform", False)),
                    sub["weight"],
                )
                for prefix, sub in supervised_attentions(pc.get("attention")).items()
            ]
        optimizer = torch.optim.AdamW(groups, betas=(0.9, 0.95), weight_decay=pc.get("weight_decay", 0.01))
        base_lrs = [g["lr"] for g in groups]
        start = state["step"] if phase_index == state["phase"] else 0
        if saved is not None and phase_index == state["phase"] and start > 0:
            optimizer.load_state_dict(saved["optimizer"])
        steps = range(start, total if not args.time_steps else min(total, start + args.time_steps))
        batches = iter(loader(data, start, args.workers))
        window: dict[str, list[torch.Tensor]] = {}
        t_phase = time.time()
        for step in steps:
            batch = to(next(batches), device)
            for g, lr in zip(optimizer.param_groups, base_lrs, strict=True):
                g["lr"] = lr * warmup_cosine(step, pc.get("warmup", 100), total, 0.1)
            if name == "vision":
                with autocast():
                    tokens = visual(batch["pixel_values"])
                loss, metrics = head(tokens, batch["targets"])
                metrics["aux_loss"] = loss.detach()
            else:
                loss, metrics = joint_loss(model, head, batch, watches, pc.get("aux_weight", 0.5), autocast)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 1.0)
            optimizer.step()
            for k, v in metrics.items():
                window.setdefault(k, []).append(v)
            done = step + 1
            steps_taken += 1
            if done % cfg.get("log_every", 50) == 0 or done == total:
                record = {"phase": name, "step": offset + done, "phase_step": done}
                record.update({k: round(float(sum(v)) / len(v), 4) for k, v in window.items()})
                lm = [x for k, v in window.items() if k.startswith("loss_") for x in v]
                if lm:  # the language-model loss over all kinds: the learning curve of `qvl-agent eval --train-log`
                    record["loss"] = round(float(sum(lm)) / len(lm), 4)
                record["seconds"] = round(time.time() - t_start, 1)
                log(out / "log.jsonl", record)
                window = {}
            if name == "joint" and (done % pc.get("eval_every", 1000) == 0 or done == total):
                scores = quick_scores(model, tokenizer, pc.get("eval_per_task", 16))
                log(
                    out / "log.jsonl",
                    {
                        "phase": name,
                        "step": offset + done,
                        "phase_step": done,
                        **scores,
                        "seconds": round(time.time() - t_start, 1),
                    },
                )
            out_of_time = bool(args.max_minutes) and time.time() - t_start > 60 * args.max_minutes
            out_of_steps = bool(args.max_steps) and steps_taken >= args.max_steps
            stop = "max_minutes" if out_of_time else "max_steps" if out_of_steps else None
            if stop or done % cfg.get("save_every", 500) == 0 or done == total:
                ckpt = out / "checkpoint"
                ckpt.mkdir(exist_ok=True)
                torch.save(
                    {
                        "model": model.state_dict(),
                        "head": head.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "state": {
                            "phase": phase_index + (done == total),
                            "step": 0 if done == total else done,
                        },
                    },
                    ckpt / "state.pt",
                )
            if stop and done < total:
                log(out / "log.jsonl", {"phase": name, "step": offset + done, "stopped": stop})
                print("stopped: continue with --resume", flush=True)
                return
        if args.time_steps:
            n = len(steps)
            per_step = (time.time() - t_phase) / max(1, n)
            print(
                json.dumps(
                    {
                        "phase": name,
                        "timed_steps": n,
                        "seconds_per_step": round(per_step, 3),
                        "phase_hours": round(per_step * total / 3600, 2),
                    }
                ),
                flush=True,
            )
        saved = None
        state = {"phase": phase_index + 1, "step": 0}
    if args.time_steps:
        return
    scores = quick_scores(model, tokenizer, 2 * jcfg.get("eval_per_task", 16))
    log(out / "log.jsonl", {"final": True, **scores, "seconds": round(time.time() - t_start, 1)})
    model.save_pretrained(out / "final", safe_serialization=True)
    tokenizer.save_pretrained(out / "final")
    print(f"saved {out / 'final'} after {time.time() - t_start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
