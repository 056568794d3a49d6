"""``recipes/demo/compare.py``: two checkpoints compared question by question."""

from __future__ import annotations

import sys
from pathlib import Path

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "demo"
sys.path.insert(0, str(RECIPE))

from compare import fresh_questions, paired  # noqa: E402

from qvl_agent.training.evaluate import ItemResult  # noqa: E402


def item(id_: str, task: str, correct: bool, args: bool | None = None) -> ItemResult:
    tool = None if args is None else {"valid_format": True, "right_tool": True, "right_arguments": args}
    return ItemResult(id_, task, correct, "", "", tool)


def test_paired_counts_the_questions_only_one_checkpoint_gets_right() -> None:
    a = {("s", "q1"): item("q1", "vqa", True), ("s", "q2"): item("q2", "vqa", True)}
    a |= {("s", "t1"): item("t1", "tools", False, args=True)}
    b = {("s", "q1"): item("q1", "vqa", False), ("s", "q2"): item("q2", "vqa", True)}
    b |= {("s", "t1"): item("t1", "tools", True, args=False)}  # a right final answer is not right arguments
    table = paired(a, b)
    assert table["vqa"] == {"n": 2, "a": 1.0, "b": 0.5, "a_only": 1, "b_only": 0, "z": -1.0}
    assert table["tools"]["a_only"] == 1 and table["tools"]["b"] == 0.0


def test_fresh_questions_leave_out_the_conversations_choices_were_made_on() -> None:
    questions = fresh_questions("demo_plural4", first=200, results_dir=RECIPE / "results")
    seed0 = [r for (part, _), r in questions.items() if part == "seed0"]
    assert seed0 and all(int(r.id.rsplit("-", 1)[1].split("#")[0]) >= 200 for r in seed0)
    assert {part for part, _ in questions} == {"seed0", "seed1", "tools300"}
    assert sum(r.task == "tools" for r in questions.values()) == 144 + 300
