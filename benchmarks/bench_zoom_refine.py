"""What zoom refinement costs and buys: the demo model's weights alone (``demo-plain``) against ``demo``
(the same weights behind :class:`~qvl_agent.zoom_refine.ZoomRefineBackend`).

Held-out synthetic questions (grounding, VQA, two-picture) are asked of both, in turn (plain, refined,
plain, …), so a busy machine slows both alike. Prints seconds per question, the time ratio, and each one's
accuracy with the evaluation's own scoring.

    python benchmarks/bench_zoom_refine.py [--conversations 60] [--seed 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import time

from qvl_agent.plugins import resolve_model
from qvl_agent.training.evaluate import run_item, synthetic_items

TASKS = ("grounding", "vqa", "multi-image")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", type=int, default=60, help="held-out conversations to draw from")
    parser.add_argument(
        "--seed", type=int, default=3, help="held-out split seed (0 and 1 are the scored ones)"
    )
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    backends = {"demo-plain": resolve_model("demo-plain", device=args.device)}
    backends["demo"] = resolve_model("demo", device=args.device)
    items = [i for i in synthetic_items(args.conversations, seed=args.seed) if i.task in TASKS]
    run_item(backends["demo"], items[0])  # warm-up
    seconds = dict.fromkeys(backends, 0.0)
    right = {name: dict.fromkeys(TASKS, 0) for name in backends}
    for item in items:
        for name, backend in backends.items():
            start = time.perf_counter()
            result = run_item(backend, item, max_new_tokens=64)
            seconds[name] += time.perf_counter() - start
            right[name][item.task] += result.correct

    asked = {task: sum(i.task == task for i in items) for task in TASKS}
    print(f"{len(items)} questions ({', '.join(f'{asked[t]} {t}' for t in TASKS)}), seed {args.seed}")
    print(f"{'backend':<12}{'s/question':>12}" + "".join(f"{t:>13}" for t in TASKS))
    for name in backends:
        scores = "".join(f"{right[name][t] / max(asked[t], 1):>13.3f}" for t in TASKS)
        print(f"{name:<12}{seconds[name] / len(items):>12.3f}{scores}")
    print(f"time ratio demo / demo-plain: {seconds['demo'] / seconds['demo-plain']:.2f}x")


if __name__ == "__main__":
    main()
