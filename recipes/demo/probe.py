"""Probe of the visual pathway: does the resampler output carry where a named object is?

A small ``QWenVisionTransformer`` (the demo model's vision tower) feeds a probe that reads the image tokens the
way the language model has to: the object's name (colour + shape) queries one content-based attention over the
``[n_queries, output_dim]`` tokens, which hold no position except what their features encode. From that
read-out an MLP predicts the object's 3x3 grid cell and its box. ``--mode frozen`` trains only the probe on the
randomly initialised tower; ``--mode joint`` trains tower + probe. Held-out cell accuracy and box acc@IoU0.5
are printed every ``--eval-every`` steps::

    python recipes/demo/probe.py --mode joint --steps 600 --cache /tmp/probe128.pt
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from qvl_agent.data.scenes import COLOURS, SHAPES, SceneConfig, random_scene, render_scene
from qvl_agent.model.image_processing import QWenImageProcessor
from qvl_agent.model.visual import QWenVisionTransformer

COLOUR_NAMES = list(COLOURS)


def make_split(n: int, seed: int, image_size: int, max_objects: int) -> dict[str, torch.Tensor]:
    """Pixels of ``n`` scenes (1..max_objects shapes) and, for one object named by colour + shape, its targets."""
    rng = random.Random(seed)
    config = SceneConfig(min_objects=1, max_objects=max_objects, tiny_prob=0.0, text_prob=0.0)
    processor = QWenImageProcessor(image_size)
    pixels, colour, shape, cell, box = [], [], [], [], []
    while len(pixels) < n:
        scene = random_scene(rng, config)
        unique = [o for o in scene.objects if sum(x.noun() == o.noun() for x in scene.objects) == 1]
        if not unique:
            continue
        obj = rng.choice(unique)
        pixels.append(processor(render_scene(scene)))
        colour.append(COLOUR_NAMES.index(obj.colour))
        shape.append(SHAPES.index(obj.shape))
        cx, cy = obj.center
        cell.append(min(int(3 * cy / scene.height), 2) * 3 + min(int(3 * cx / scene.width), 2))
        x1, y1, x2, y2 = obj.box
        box.append([x1 / scene.width, y1 / scene.height, x2 / scene.width, y2 / scene.height])
    return {
        "pixels": torch.cat(pixels),
        "colour": torch.tensor(colour),
        "shape": torch.tensor(shape),
        "cell": torch.tensor(cell),
        "box": torch.tensor(box),
    }


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    ix = (torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0])).clamp(min=0)
    iy = (torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1])).clamp(min=0)
    inter = ix * iy
    area = lambda t: (t[:, 2] - t[:, 0]).clamp(min=0) * (t[:, 3] - t[:, 1]).clamp(min=0)  # noqa: E731
    return inter / (area(a) + area(b) - inter).clamp(min=1e-9)


class Probe(nn.Module):
    """Reads an object out of the image tokens the way the language model must: by content.

    The object's name (colour + shape embeddings) is the query of one attention over the normalised image
    tokens, which carry no position except what their features encode; an MLP turns the read-out into the
    3x3 cell and the box. A second, name-free head classifies the named object's colour from the same
    read-out (sanity check of the content path).
    """

    def __init__(self, dim: int, hidden: int = 256) -> None:
        super().__init__()
        self.colour = nn.Embedding(len(COLOURS), hidden)
        self.shape = nn.Embedding(len(SHAPES), hidden)
        self.norm = nn.LayerNorm(dim)
        self.key = nn.Linear(dim, hidden)
        self.value = nn.Linear(dim, hidden)
        self.mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, 9 + 4))

    def forward(
        self, feats: torch.Tensor, colour: torch.Tensor, shape: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        x = self.norm(feats)
        q = self.colour(colour) + self.shape(shape)  # [B, H]
        scores = torch.einsum("bh,bth->bt", q, self.key(x)) / q.shape[-1] ** 0.5
        read = torch.einsum("bt,bth->bh", scores.softmax(-1), self.value(x))
        g, b = self.mlp(read).split([9, 4], dim=1)
        return {"cell": g, "box": b.sigmoid()}


def losses(pred: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return F.cross_entropy(pred["cell"], batch["cell"]) + 10 * F.l1_loss(pred["box"], batch["box"])


@torch.no_grad()
def evaluate(tower: nn.Module, probe: Probe, data: dict[str, torch.Tensor]) -> dict[str, float]:
    tower.eval()
    preds = [
        probe(tower(data["pixels"][i : i + 64]), data["colour"][i : i + 64], data["shape"][i : i + 64])
        for i in range(0, len(data["pixels"]), 64)
    ]
    pred = {k: torch.cat([p[k] for p in preds]) for k in preds[0]}
    tower.train()
    return {
        "cell": (pred["cell"].argmax(1) == data["cell"]).float().mean().item(),
        "box_acc@0.5": (box_iou(pred["box"], data["box"]) >= 0.5).float().mean().item(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["frozen", "joint"], default="joint")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--patch-size", type=int, default=8)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--output-dim", type=int, default=256)
    parser.add_argument("--n-queries", type=int, default=256)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--train", type=int, default=3000)
    parser.add_argument("--heldout", type=int, default=300)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--max-objects", type=int, default=3)
    parser.add_argument("--tower-lr", type=float, help="learning rate of the tower (default --lr)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--spatial-init", action="store_true", help="start from spatial_init.py's weights")
    parser.add_argument("--resampler-heads", type=int)
    parser.add_argument("--cache", help="torch.save the rendered data here / load it if present")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(args.seed)

    t0 = time.time()
    if args.cache and Path(args.cache).is_file():
        train, heldout = torch.load(args.cache)
    else:
        train = make_split(args.train, args.seed, args.image_size, args.max_objects)
        heldout = make_split(args.heldout, args.seed + 1_000_000, args.image_size, args.max_objects)
        if args.cache:
            torch.save((train, heldout), args.cache)
    print(f"data: {args.train}+{args.heldout} scenes in {time.time() - t0:.0f}s", flush=True)

    tower = QWenVisionTransformer(
        image_size=args.image_size,
        patch_size=args.patch_size,
        width=args.width,
        layers=args.layers,
        heads=max(1, args.width // 32),
        mlp_ratio=4.0,
        output_dim=args.output_dim,
        n_queries=args.n_queries,
        resampler_heads=args.resampler_heads,
    )
    if args.spatial_init:
        from spatial_init import spatial_init

        spatial_init(tower)
    probe = Probe(args.output_dim)
    if args.mode == "frozen":
        tower.requires_grad_(False)
    tower_lr = args.tower_lr if args.tower_lr is not None else args.lr
    groups = [{"params": list(probe.parameters()), "lr": args.lr}]
    if args.mode == "joint":
        groups.append({"params": list(tower.parameters()), "lr": tower_lr})
    optimizer = torch.optim.AdamW(groups, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / args.warmup))
    g = torch.Generator().manual_seed(args.seed)
    t0 = time.time()
    for step in range(1, args.steps + 1):
        idx = torch.randint(0, args.train, (args.batch_size,), generator=g)
        batch = {k: v[idx] for k, v in train.items()}
        loss = losses(probe(tower(batch["pixels"]), batch["colour"], batch["shape"]), batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % args.eval_every == 0 or step == args.steps:
            scores = evaluate(tower, probe, heldout)
            record = {"step": step, "seconds": round(time.time() - t0, 1), "loss": round(loss.item(), 3)}
            print(json.dumps({**record, **{k: round(v, 3) for k, v in scores.items()}}), flush=True)


if __name__ == "__main__":
    main()
