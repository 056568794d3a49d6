"""Where a demo checkpoint fails, by question form: the table of the README's "Where it fails".

    python recipes/demo/failures.py recipes/demo/results/demo_bind3.json recipes/demo/results/demo_shape.json

Each argument is the ``--output`` of ``qvl-agent eval --model demo --task all --n-samples N``; the
questions are rebuilt from the held-out synthetic split (every sample is a pure function of its index), so
``--n-samples``, ``--seed`` and ``--synthetic`` must match the runs'. Prints one markdown row per question form, "correct / asked" per file.
Tool rows count the reference call's tool: arguments right for zoom boxes and calculator expressions.
``--counts`` splits the counting rows by what is counted and the right answer ("counting: objects = 3");
``--sizes`` splits the grounding rows by the size of the reference box ("… · tiny").
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from pathlib import Path

import click

from qvl_agent.data.cli import data_config_option
from qvl_agent.data.scenes import SIZES
from qvl_agent.training.evaluate import synthetic_items
from qvl_agent.training.metrics import extract_boxes

Form = tuple[str, str]


def question(query: str) -> str:
    """The words of the question, after the last picture."""
    return query.split("</img>")[-1].strip()


def grounding_form(q: str) -> str:
    if 'the word "' in q:
        return 'a word ("Find/Locate/Where is the word …")'
    if q.startswith("Where is"):
        return '"Where is the …"'
    return '"Find/Locate the <colour/size> <shape>"'


def vqa_form(q: str) -> str:
    if q.startswith("How many"):
        return "counting"
    if "<box>" in q:
        return 'box → name ("What is in <box>", "What object is <box>")'
    if q.startswith(("What shape", "What word")):
        return '"What shape is …", "What word is …"'
    return '"Is there a …", "Where is …", "How big is …", colour'


def multi_image_form(q: str) -> str:
    if q.startswith("Find"):
        return '"Find … in Picture k"'
    if q.startswith("Which picture"):
        return '"Which picture has …"'
    if q.startswith("How many"):
        return "counting in Picture k"
    return '"What colour is the <shape> in Picture k"'


FORMS: dict[str, Callable[[str], str]] = {
    "grounding": grounding_form,
    "vqa": vqa_form,
    "multi-image": multi_image_form,
}
TOOL_ROWS = {"zoom": "zoom box (IoU ≥ 0.5)", "calculator": "calculator expression"}


def count_form(form: str, q: str, expected: str) -> str:
    """A counting form split by what is counted and the right answer: ``counting: objects = 3``."""
    what = "objects" if "objects" in q else "a shape or colour"
    return f"{form}: {what} = {expected}"


def box_size(box: tuple[int, int, int, int]) -> str:
    """The size word (``SIZES``) whose range a [0,1000) box's longer side lies in, or is nearest."""
    x1, y1, x2, y2 = box
    side = max(x2 - x1, y2 - y1) / 1000
    return min(
        SIZES, key=lambda s: 0 if SIZES[s][0] <= side <= SIZES[s][1] else min(abs(side - b) for b in SIZES[s])
    )


def size_form(form: str, expected: str) -> str:
    """A grounding form split by the size of the reference box (:func:`box_size`): ``"Where is the …" · tiny``."""
    boxes = extract_boxes(expected)
    return f"{form} · {box_size(boxes[0][1])}" if boxes else form


def tally(
    result_file: Path,
    queries: dict[str, tuple[str, str]],
    by_count: bool = False,
    by_size: bool = False,
) -> dict[Form, list[int]]:
    """(task, form) -> [correct, asked] for one eval output; ``by_count`` splits the counting forms by their
    right answer (:func:`count_form`), ``by_size`` the grounding forms by the box's size (:func:`size_form`)."""
    counts: dict[Form, list[int]] = {}

    def add(form: Form, ok: bool) -> None:
        cell = counts.setdefault(form, [0, 0])
        cell[0] += int(ok)
        cell[1] += 1

    for p in json.loads(result_file.read_text(encoding="utf-8"))["predictions"]:
        # eval outputs carry each reference answer: a different split with the same ids shows there
        query, expected = queries.get(p["id"], (None, None))
        if query is None or p.get("expected", expected) != expected:
            raise SystemExit(
                f"{result_file}: question {p['id']} is not in the split; are --n-samples, --seed and --synthetic right?"
            )
        if p["task"] in FORMS:
            form = FORMS[p["task"]](question(query))
            if by_count and form.startswith("counting"):
                form = count_form(form, question(query), expected)
            if by_size and p["task"] == "grounding":
                form = size_form(form, expected)
            add((p["task"], form), p["correct"])
        elif p["task"] == "tools" and p["tool"] is not None:
            add(("tools", "format and tool choice"), p["tool"]["valid_format"] and p["tool"]["right_tool"])
            tool = re.search(r"^Action: (\w+)", expected, re.M)
            if tool and tool.group(1) in TOOL_ROWS:
                add(("tools", TOOL_ROWS[tool.group(1)]), p["tool"]["right_arguments"])
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path, help="eval outputs (JSON with 'predictions')")
    parser.add_argument("--n-samples", type=int, default=200, help="as given to qvl-agent eval")
    parser.add_argument("--seed", type=int, default=0, help="as given to qvl-agent eval")
    parser.add_argument(
        "--synthetic", help="as given to qvl-agent eval (DataConfig fields as JSON or a .json file)"
    )
    parser.add_argument(
        "--counts",
        action="store_true",
        help="split counting questions by what is counted and the right answer",
    )
    parser.add_argument(
        "--sizes", action="store_true", help="split grounding questions by the size of the reference box"
    )
    args = parser.parse_args()
    try:
        config = data_config_option(args.synthetic, "--synthetic")
    except click.BadParameter as exc:
        parser.error(exc.message)
    items = synthetic_items(args.n_samples, args.seed, config)
    queries = {item.id: (item.query, item.expected) for item in items}
    tables = [tally(path, queries, args.counts, args.sizes) for path in args.results]
    tasks = [*FORMS, "tools"]
    forms = sorted({f for t in tables for f in t}, key=lambda f: (tasks.index(f[0]), f[1]))
    print("| task | question | " + " | ".join(f"`{p.stem}`" for p in args.results) + " |")
    print("|---|---|" + "---|" * len(tables))
    for task, form in forms:
        cells = [f"{t[(task, form)][0]}/{t[(task, form)][1]}" if (task, form) in t else "–" for t in tables]
        print(f"| {task} | {form} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
