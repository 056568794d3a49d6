"""Scores of ``qvl-agent eval`` outputs split by conversation: the first N and the rest.

    python recipes/demo/split_scores.py results/demo_bind3_n600.json results/demo_plural3w_n600.json --first 200

Every checkpoint has been chosen on the first 200 held-out conversations (the standard ``--n-samples 200``),
so scores there carry selection luck; an eval with ``--n-samples 600`` holds those 200 and 400 more, and
the scores on the rest are the fair comparison (README → *Which checkpoint ships*). With ``--seed1``
(one ``--seed 1 --n-samples 600`` output per result file, in the same order) a third row, "fresh", pools
the rest with all of seed 1: the 1,000 conversations the choice between checkpoints is made on.

    python recipes/demo/split_scores.py results/A_n600.json --seed1 results/A_seed1_n600.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from qvl_agent.training.evaluate import ItemResult, summarize


def conversation_index(item_id: str) -> int:
    """The held-out conversation an eval item comes from (``heldout-000042#1`` → 42)."""
    return int(item_id.rsplit("-", 1)[1].split("#")[0])


def unchosen(results: list[ItemResult], first: int) -> list[ItemResult]:
    """The items of conversations ``first`` and later: those no checkpoint was chosen on."""
    return [r for r in results if conversation_index(r.id) >= first]


def split_scores(results: list[ItemResult], first: int) -> dict[str, dict[str, dict[str, float]]]:
    """``{"first": summary, "rest": summary}``: :func:`summarize` of the items of conversations ``< first`` and
    of the others."""
    parts = {
        "first": [r for r in results if conversation_index(r.id) < first],
        "rest": unchosen(results, first),
    }
    return {name: summarize(rs) for name, rs in parts.items()}


def fresh_scores(seed0: list[ItemResult], seed1: list[ItemResult], first: int) -> dict[str, dict[str, float]]:
    """:func:`summarize` of the conversations no checkpoint was chosen on: seed 0's from ``first`` on, and
    all of seed 1's."""
    return summarize(unchosen(seed0, first) + seed1)


def load_results(path: Path) -> list[ItemResult]:
    """The per-question results of an ``--output`` file of ``qvl-agent eval``."""
    return [ItemResult(**p) for p in json.loads(path.read_text())["predictions"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path)
    parser.add_argument("--first", type=int, default=200, help="conversations in the first part")
    parser.add_argument("--seed1", nargs="*", type=Path, default=[], help="seed-1 outputs, one per result")
    args = parser.parse_args()
    if args.seed1 and len(args.seed1) != len(args.results):
        parser.error("--seed1 takes one file per result file")
    print(
        f"{'file':32s} {'part':6s}"
        + "".join(f"{h:>10s}" for h in ("grounding", "vqa", "multi", "args", "format"))
        + "  n"
    )
    for i, path in enumerate(args.results):
        results = load_results(path)
        parts = split_scores(results, args.first)
        if args.seed1:
            parts["fresh"] = fresh_scores(results, load_results(args.seed1[i]), args.first)
        for part, summary in parts.items():
            row = [
                summary.get(t, {}).get("accuracy", float("nan")) for t in ("grounding", "vqa", "multi-image")
            ]
            tools = summary.get("tools", {})
            row += [tools.get("right_arguments", float("nan")), tools.get("valid_format", float("nan"))]
            counts = "/".join(str(int(summary[t]["n"])) for t in summary if t != "caption")
            print(f"{path.name:32s} {part:6s}" + "".join(f"{v:>10.3f}" for v in row) + f"  {counts}")


if __name__ == "__main__":
    main()
