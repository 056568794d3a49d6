"""How far a checkpoint's grounding boxes sit from the reference, by box size: bias and precision.

    python recipes/demo/box_errors.py demo_countp5g demo_countn5g

NAME stands for ``results/NAME_n600.json`` and ``results/NAME_seed1_n600.json`` (as in ``compare.py``).
Only shape answers count (words are found by reading, not placing); for each size (``failures.box_size`` of
the reference box) it prints how many answers were asked, how many put their box's centre inside the
reference box, and over those the mean signed and mean absolute error of x1, y1, x2, y2 in [0,1000) units.
A mean error far from 0 is a bias (e.g. training targets snapped down, README step 13); a large mean
|error| with a small bias is imprecision.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from failures import box_size
from split_scores import load_results

from qvl_agent.training.evaluate import ItemResult
from qvl_agent.training.metrics import extract_boxes

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class SizeErrors:
    """The answers of one size: how many were asked, and the coordinate errors of those centred inside."""

    asked: int = 0
    errors: list[tuple[int, int, int, int]] = field(default_factory=list)

    def mean(self, absolute: bool = False) -> list[float]:
        n = max(len(self.errors), 1)
        return [sum(abs(e[i]) if absolute else e[i] for e in self.errors) / n for i in range(4)]


def box_errors(results: list[ItemResult]) -> dict[str, SizeErrors]:
    """Size word -> :class:`SizeErrors` over the grounding answers about shapes in ``results``."""
    sizes: dict[str, SizeErrors] = {}
    for r in results:
        if r.task != "grounding" or 'the word "' in r.expected:
            continue
        reference = extract_boxes(r.expected)[0][1]
        cell = sizes.setdefault(box_size(reference), SizeErrors())
        cell.asked += 1
        predicted = extract_boxes(r.prediction or "")
        if not predicted:
            continue
        box = predicted[0][1]
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        if reference[0] <= cx <= reference[2] and reference[1] <= cy <= reference[3]:
            cell.errors.append(tuple(b - r for b, r in zip(box, reference, strict=True)))
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+", help="results/NAME_n600.json and results/NAME_seed1_n600.json")
    args = parser.parse_args()
    print("| checkpoint | size | asked | centre inside | mean error x1, y1, x2, y2 | mean abs. error |")
    print("|---|---|---|---|---|---|")
    for name in args.names:
        paths = [RESULTS / f"{name}_n600.json", RESULTS / f"{name}_seed1_n600.json"]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            parser.error(f"no eval output {', '.join(missing)} (run scores.sh first)")
        for size, cell in box_errors([r for path in paths for r in load_results(path)]).items():
            signed = ", ".join(f"{v:+.1f}" for v in cell.mean())
            absolute = ", ".join(f"{v:.1f}" for v in cell.mean(absolute=True))
            print(f"| `{name}` | {size} | {cell.asked} | {len(cell.errors)} | {signed} | {absolute} |")


if __name__ == "__main__":
    main()
