"""``recipes/demo/failures.py`` sorts an eval output's answers into the README's question forms."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "demo"
sys.path.insert(0, str(RECIPE))

from failures import FORMS, count_form, question, tally  # noqa: E402

from qvl_agent.data.cli import data_config_option  # noqa: E402
from qvl_agent.training.evaluate import synthetic_items  # noqa: E402


def test_every_question_is_counted_once_under_its_form(tmp_path: Path) -> None:
    items = synthetic_items(12, seed=0)
    wrong = next(i for i in items if i.task == "vqa" and question(i.query).startswith("How many"))
    predictions = [
        {
            "id": i.id,
            "task": i.task,
            "correct": i is not wrong,
            "tool": {"valid_format": True, "right_tool": True, "right_arguments": False}
            if i.task == "tools"
            else None,
        }
        for i in items
    ]
    (tmp_path / "run.json").write_text(json.dumps({"predictions": predictions}))
    counts = tally(tmp_path / "run.json", {i.id: (i.query, i.expected) for i in items})

    for task in FORMS:
        assert sum(asked for (t, _), (_, asked) in counts.items() if t == task) == sum(
            i.task == task for i in items
        )
    assert counts[("vqa", "counting")][0] == counts[("vqa", "counting")][1] - 1  # the one wrong answer
    tools = sum(i.task == "tools" for i in items)
    assert counts[("tools", "format and tool choice")] == [tools, tools]
    zooms = sum("Action: zoom" in i.expected for i in items if i.task == "tools")
    assert counts.get(("tools", "zoom box (IoU ≥ 0.5)"), [0, 0]) == [0, zooms]


def test_the_cli_rebuilds_the_split_of_the_seed_and_synthetic_config_it_is_given(tmp_path: Path) -> None:
    synthetic = '{"task_weights": {"tools": 1.0}}'
    items = synthetic_items(6, seed=1, config=data_config_option(synthetic, "--synthetic"))
    predictions = [
        {
            "id": i.id,
            "task": i.task,
            "correct": True,
            "expected": i.expected,  # as qvl-agent eval writes it
            "tool": {"valid_format": True, "right_tool": True, "right_arguments": True},
        }
        for i in items
    ]
    (tmp_path / "run.json").write_text(json.dumps({"predictions": predictions}))

    def run(*options: str) -> subprocess.CompletedProcess:
        args = [sys.executable, str(RECIPE / "failures.py"), str(tmp_path / "run.json"), "--n-samples", "6"]
        return subprocess.run([*args, *options], capture_output=True, text=True, timeout=120)

    ok = run("--seed", "1", "--synthetic", synthetic)
    assert ok.returncode == 0, ok.stderr
    assert f"| tools | format and tool choice | {len(items)}/{len(items)} |" in ok.stdout
    # the default split (seed 0, the default mix) has the same ids for other questions: a one-line error, no table
    wrong = run()
    assert wrong.returncode != 0 and "--seed" in wrong.stderr and "Traceback" not in wrong.stderr
    bad = run("--synthetic", '{"bogus": 1}')
    assert bad.returncode == 2 and "--synthetic" in bad.stderr and "Traceback" not in bad.stderr


def test_counts_split_the_counting_rows_by_what_is_counted_and_the_answer(tmp_path: Path) -> None:
    items = synthetic_items(40, seed=0)
    predictions = [{"id": i.id, "task": i.task, "correct": i.expected == "0", "tool": None} for i in items]
    (tmp_path / "run.json").write_text(json.dumps({"predictions": predictions}))
    queries = {i.id: (i.query, i.expected) for i in items}
    plain, split = tally(tmp_path / "run.json", queries), tally(tmp_path / "run.json", queries, by_count=True)

    counting = [i for i in items if i.task == "vqa" and question(i.query).startswith("How many")]
    rows = {f for (t, f) in split if t == "vqa" and f.startswith("counting")}
    assert rows == {count_form("counting", question(i.query), i.expected) for i in counting} and len(rows) > 2
    # the split rows add up to the plain one, and only the answers "0" were marked right
    assert [sum(split[("vqa", f)][k] for f in rows) for k in (0, 1)] == plain[("vqa", "counting")]
    assert all(split[("vqa", f)][0] == (split[("vqa", f)][1] if f.endswith("= 0") else 0) for f in rows)
    assert {k: v for k, v in split.items() if not k[1].startswith("counting")} == {
        k: v for k, v in plain.items() if not k[1].startswith("counting")
    }


def test_sizes_name_the_size_word_whose_range_the_reference_box_falls_in() -> None:
    from failures import size_form

    def box(side: int) -> str:
        return f"<ref>the red star</ref><box>(100,200),({100 + side},{200 + side})</box>"

    assert size_form("f", box(50)) == "f · tiny"
    assert size_form("f", box(120)) == "f · small"
    assert size_form("f", box(200)) == "f · medium"
    assert size_form("f", box(300)) == "f · large"
    assert size_form("f", box(150)) == "f · small"  # between ranges: the nearest one
    wide = '<ref>the word "cat"</ref><box>(100,200),(400,260)</box>'  # a word: its longer side counts
    assert size_form("f", wide) == "f · large"
    assert size_form("f", "no box here") == "f"
