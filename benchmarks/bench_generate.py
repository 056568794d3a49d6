"""Prefill and decode speed of QWenLMHeadModel: fp32 vs bf16, with vs without the KV cache.

Runs the tiny reference config (hidden 128, 2 layers, full 151,936 vocabulary) with random weights, or a
checkpoint folder given with ``--checkpoint``. Greedy decoding, logits only for the last position (as
``generate`` does). Ratios are against baselines measured in the same run: every variant is timed in turn,
round after round, and the best of ``--repeats`` rounds is kept, so a busy machine skews no ratio.

    python benchmarks/bench_generate.py [--lengths 128 512 2048] [--new-tokens 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import torch

from qvl_agent.model import QWenConfig, QWenLMHeadModel

TINY_CONFIG = dict(
    vocab_size=151936,
    hidden_size=128,
    num_hidden_layers=2,
    num_attention_heads=2,
    kv_channels=64,
    intermediate_size=344,
    seq_length=2048,
    max_position_embeddings=8192,
    fp32=True,
    visual=dict(heads=4, image_size=56, layers=2, mlp_ratio=2.6875, output_dim=128, patch_size=14, width=64),
)


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def build_model(checkpoint: str | None, dtype: torch.dtype) -> QWenLMHeadModel:
    if checkpoint:
        model = QWenLMHeadModel.from_pretrained(checkpoint, dtype=dtype)
    else:
        torch.manual_seed(0)
        model = QWenLMHeadModel(QWenConfig(**TINY_CONFIG)).to(dtype)
    return model.eval()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def time_prefill(model: QWenLMHeadModel, ids: torch.Tensor) -> float:
    start = time.perf_counter()
    model(ids, use_cache=False, logits_to_keep=1)
    sync(ids.device)
    return time.perf_counter() - start


@torch.no_grad()
def time_decode(model: QWenLMHeadModel, ids: torch.Tensor, new_tokens: int, use_cache: bool) -> float:
    """Seconds for ``new_tokens`` greedy steps after the prompt (prefill excluded)."""
    out = model(ids, use_cache=use_cache, logits_to_keep=1)
    cache, sequence = out.cache, ids
    next_id = out.logits[:, -1].argmax(-1, keepdim=True)
    start = time.perf_counter()
    for _ in range(new_tokens):
        sequence = torch.cat([sequence, next_id], dim=1)
        if use_cache:
            out = model(next_id, cache=cache, use_cache=True, logits_to_keep=1)
            cache = out.cache
        else:
            out = model(sequence, use_cache=False, logits_to_keep=1)
        next_id = out.logits[:, -1].argmax(-1, keepdim=True)
    sync(ids.device)
    return time.perf_counter() - start


def interleaved_best(repeats: int, runs: dict[str, tuple]) -> dict[str, float]:
    """Best-of-``repeats`` seconds for each ``name -> (fn, *args)``, the runs taken in turn (A B C A B C ...)
    so that load changes on a shared machine hit every variant alike; one warm-up round first."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for round_index in range(repeats + 1):
        for name, (fn, *args) in runs.items():
            elapsed = fn(*args)
            if round_index:
                times[name].append(elapsed)
    return {name: min(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 512, 2048])
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--checkpoint", help="a checkpoint folder instead of the random tiny model")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: on a busy machine OpenMP spinning makes multi-thread timings erratic; "
        "0 keeps torch's default)",
    )
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    models = {name: build_model(args.checkpoint, dtype).to(args.device) for name, dtype in DTYPES.items()}
    results: dict[tuple[int, str], dict[str, float]] = {}
    for length in args.lengths:
        ids = torch.randint(0, 151643, (1, length), generator=torch.Generator().manual_seed(length))
        ids = ids.to(args.device)
        runs: dict[str, tuple] = {}
        for name, model in models.items():
            runs[f"{name}.prefill"] = (time_prefill, model, ids)
            runs[f"{name}.cache"] = (time_decode, model, ids, args.new_tokens, True)
            runs[f"{name}.nocache"] = (time_decode, model, ids, args.new_tokens, False)
        best = interleaved_best(args.repeats, runs)
        for name in models:
            results[length, name] = {
                "prefill": length / best[f"{name}.prefill"],
                "cache": args.new_tokens / best[f"{name}.cache"],
                "nocache": args.new_tokens / best[f"{name}.nocache"],
            }

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.new_tokens} new tokens, "
        f"best of {args.repeats}, tok/s"
    )
    header = (
        f"{'prompt':>6} {'dtype':>5} {'prefill':>9} {'decode+cache':>12} {'decode-nocache':>14} "
        f"{'cache/nocache':>13} {'prefill bf16/fp32':>17} {'decode bf16/fp32':>16}"
    )
    print(header)
    print("-" * len(header))
    for length in args.lengths:
        fp32 = results[length, "fp32"]
        for dtype_name in ("fp32", "bf16"):
            r = results[length, dtype_name]
            bf16_ratios = ""
            if dtype_name == "bf16":
                bf16_ratios = f"{r['prefill'] / fp32['prefill']:>17.2f} {r['cache'] / fp32['cache']:>16.2f}"
            print(
                f"{length:>6} {dtype_name:>5} {r['prefill']:>9.0f} {r['cache']:>12.1f} {r['nocache']:>14.1f} "
                f"{r['cache'] / r['nocache']:>13.2f} {bf16_ratios}"
            )


if __name__ == "__main__":
    main()
