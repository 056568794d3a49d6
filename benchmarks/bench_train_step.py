"""Speed of one training step of the demo recipe: float32 against bfloat16 autocast (``"autocast"`` in a
``recipes/demo`` config), and bfloat16 with the explicit [seq, seq] padding mask the model built for right-padded
batches until session 14 (now SDPA's ``is_causal``, exact for the real positions), and bfloat16 with the decoder's
norms and MLPs under ``torch.compile`` (dynamic shapes; measured in session 23: no faster on 2 CPU cores, so
``train.py`` does not compile).

A step is what ``recipes/demo/train.py`` runs in its joint phase: forward, LM + supervised-attention + dense-head
losses, backward, gradient clipping and AdamW, on 16 conversations of the held-out mix (``configs/demo_bind2.json``)
from the shipped demo model. Both variants see the same batches; they are timed in turn, round after round, and
the best of ``--repeats`` rounds is kept per batch, so a busy machine skews no ratio.

    python benchmarks/bench_train_step.py [--batches 4] [--repeats 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes" / "demo"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from attention_targets import AttentionSupervision, supervised_attentions  # noqa: E402
from bench_generate import interleaved_best  # noqa: E402
from demo_data import MixSpec  # noqa: E402
from dense_targets import DenseHead  # noqa: E402
from train import ChatData, joint_loss  # noqa: E402

from qvl_agent.model.loading import load_model  # noqa: E402

CONFIG = ROOT / "recipes" / "demo" / "configs" / "demo_bind2.json"
# name: (autocast dtype, pass the padding as an explicit 4-D mask, compile the decoder's norms and MLPs)
VARIANTS = {
    "fp32": (None, False, False),
    "bf16": (torch.bfloat16, False, False),
    "bf16+mask": (torch.bfloat16, True, False),
    "bf16+compile": (torch.bfloat16, False, True),
}


def trainer(model, attention: dict, dtype: torch.dtype | None, masked: bool, compiled: bool):
    """A function running one training step of ``model`` on a batch, returning its seconds; ``masked``: the
    model attends through its explicit ``causal_padding_mask`` instead of SDPA's ``is_causal``; ``compiled``:
    the decoder blocks' norms and MLPs run under ``torch.compile`` (the attention stays eager: the supervised
    attention hooks its inputs)."""
    if masked:
        model.transformer._attention_mask = model.transformer.causal_padding_mask
    if compiled:
        for block in model.transformer.h:
            for part in (block.ln_1, block.mlp, block.ln_2):
                part.compile(dynamic=True)
    watches = [
        (
            prefix,
            AttentionSupervision(model, sub["layers"], sub["head"], sub.get("uniform", False)),
            sub["weight"],
        )
        for prefix, sub in supervised_attentions(attention).items()
    ]
    head = DenseHead(model.transformer.visual.output_dim)
    params = list(model.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-5)

    def autocast():
        return torch.autocast("cpu", dtype=dtype, enabled=dtype is not None)

    def step(batch) -> float:
        start = time.perf_counter()
        loss, _ = joint_loss(model, head, batch, watches, 0.5, autocast)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        return time.perf_counter() - start

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=4, help="different batches timed (kinds vary)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    cfg = json.loads(CONFIG.read_text())["joint"]
    base, tokenizer = load_model("demo")
    base.float().train()
    visual = base.transformer.visual
    data = ChatData(
        1,
        MixSpec(**cfg["mix"]),
        tokenizer,
        visual.image_processor,
        math.isqrt(visual.n_queries),
        cfg["batch_size"],
        cfg["max_length"],
        None,
        cfg["attention"],
    )
    steps = {
        name: trainer(copy.deepcopy(base), cfg["attention"], *variant) for name, variant in VARIANTS.items()
    }
    total = dict.fromkeys(VARIANTS, 0.0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, best of {args.repeats} per batch")
    print(
        f"{'batch':>5} {'kind':>6} {'tokens':>7} {'fp32 s':>7} {'bf16 s':>7} {'bf16+mask s':>11} "
        f"{'bf16+compile s':>14} {'fp32/bf16':>9} {'mask/causal':>11} {'eager/compiled':>14}"
    )
    for index in range(args.batches):
        batch = data[1000 + index]
        best = interleaved_best(args.repeats, {name: (step, batch) for name, step in steps.items()})
        for name in VARIANTS:
            total[name] += best[name]
        tokens = int(batch["attention_mask"].sum())
        print(
            f"{index:>5} {batch['kind']:>6} {tokens:>7} {best['fp32']:>7.3f} {best['bf16']:>7.3f} "
            f"{best['bf16+mask']:>11.3f} {best['bf16+compile']:>14.3f} {best['fp32'] / best['bf16']:>9.2f} "
            f"{best['bf16+mask'] / best['bf16']:>11.2f} {best['bf16'] / best['bf16+compile']:>14.2f}"
        )
    print(f"all batches: bf16 autocast step is {total['fp32'] / total['bf16']:.2f}x as fast as fp32")
    print(
        f"all batches: right padding as is_causal is {total['bf16+mask'] / total['bf16']:.2f}x as fast as "
        "the explicit padding mask (bf16)"
    )
    print(
        f"all batches: torch.compile on the decoder's norms and MLPs makes a bf16 step "
        f"{total['bf16'] / total['bf16+compile']:.2f}x as fast as eager"
    )


if __name__ == "__main__":
    main()
