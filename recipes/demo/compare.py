"""Paired comparison of two checkpoints on the fresh held-out questions: which questions only one gets right.

    python recipes/demo/compare.py demo_plural4 demo_countp5g

NAME stands for ``results/NAME_n600.json``, ``results/NAME_seed1_n600.json`` and (if both checkpoints have
one) ``results/NAME_tools300.json``. The questions are the fresh ones (seed 0's conversations from
``--first`` on, all of seed 1, the tools300 set); tool questions count the right tool and arguments. Both
checkpoints answered the same questions, so the sign test on the questions where they differ
(``z = (b_only - a_only) / sqrt(a_only + b_only)``) sees a real difference far sooner than two separate
accuracies do; |z| ≥ 2 is the line README uses.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from split_scores import load_results, unchosen

from qvl_agent.training.evaluate import ItemResult

RESULTS = Path(__file__).resolve().parent / "results"
TASKS = ("grounding", "vqa", "multi-image", "tools")


def right(result: ItemResult) -> bool:
    """What a question counts as: tool questions by their arguments, the others by their answer."""
    return bool((result.tool or {}).get("right_arguments")) if result.task == "tools" else result.correct


def fresh_questions(name: str, first: int, results_dir: Path = RESULTS) -> dict[tuple[str, str], ItemResult]:
    """``{(set, item id): result}`` of a checkpoint's fresh questions."""
    sets = {
        "seed0": unchosen(load_results(results_dir / f"{name}_n600.json"), first),
        "seed1": load_results(results_dir / f"{name}_seed1_n600.json"),
    }
    tools300 = results_dir / f"{name}_tools300.json"
    if tools300.is_file():
        sets["tools300"] = load_results(tools300)
    return {(part, r.id): r for part, results in sets.items() for r in results}


def paired(
    a: dict[tuple[str, str], ItemResult], b: dict[tuple[str, str], ItemResult]
) -> dict[str, dict[str, float]]:
    """Per task, over the questions both answered: n, each accuracy, a_only, b_only and the sign test's z."""
    table = {}
    for task in TASKS:
        keys = [k for k, r in a.items() if r.task == task and k in b]
        if not keys:
            continue
        a_only = sum(right(a[k]) and not right(b[k]) for k in keys)
        b_only = sum(right(b[k]) and not right(a[k]) for k in keys)
        table[task] = {
            "n": len(keys),
            "a": sum(right(a[k]) for k in keys) / len(keys),
            "b": sum(right(b[k]) for k in keys) / len(keys),
            "a_only": a_only,
            "b_only": b_only,
            "z": (b_only - a_only) / math.sqrt(a_only + b_only) if a_only + b_only else 0.0,
        }
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument(
        "--first", type=int, default=200, help="seed-0 conversations that choices were made on"
    )
    args = parser.parse_args()
    a, b = (fresh_questions(name, args.first) for name in (args.a, args.b))
    print(f"{'task':12s} {'n':>5s} {args.a:>20s} {args.b:>20s} {'a only':>7s} {'b only':>7s} {'z':>6s}")
    for task, row in paired(a, b).items():
        print(
            f"{task:12s} {row['n']:5d} {row['a']:20.3f} {row['b']:20.3f} {row['a_only']:7d} {row['b_only']:7d}"
            f" {row['z']:6.2f}"
        )


if __name__ == "__main__":
    main()
