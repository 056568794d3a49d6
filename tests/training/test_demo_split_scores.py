"""``recipes/demo/split_scores.py``: eval results split into the first N held-out conversations and the rest."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "demo"
sys.path.insert(0, str(RECIPE))

from split_scores import conversation_index, fresh_scores, load_results, split_scores  # noqa: E402

from qvl_agent.training.evaluate import ItemResult, summarize  # noqa: E402


def test_items_are_split_by_the_conversation_they_come_from() -> None:
    assert conversation_index("heldout-000042#1") == 42
    results = [
        ItemResult("heldout-000001#0", "vqa", True, "red", "red"),
        ItemResult("heldout-000199#2", "vqa", False, "red", "blue"),
        ItemResult("heldout-000200#0", "vqa", False, "2", "3"),
        ItemResult(
            "heldout-000450#1",
            "tools",
            True,
            "",
            "",
            {"valid_format": True, "right_tool": True, "right_arguments": False},
        ),
    ]
    parts = split_scores(results, first=200)
    assert parts["first"] == {"vqa": {"n": 2, "accuracy": 0.5}}
    assert parts["rest"]["vqa"] == {"n": 1, "accuracy": 0.0}
    assert parts["rest"]["tools"]["right_tool"] == 1.0 and parts["rest"]["tools"]["right_arguments"] == 0.0


@pytest.mark.parametrize("name", ["demo_bind3", "demo_plural3w"])
def test_the_first_200_of_a_600_conversation_eval_are_the_standard_eval(name: str) -> None:
    # the premise of README's "Which checkpoint ships": the 600-conversation eval contains the standard one
    parts = split_scores(load_results(RECIPE / "results" / f"{name}_n600.json"), first=200)
    standard = summarize(load_results(RECIPE / "results" / f"{name}.json"))
    assert parts["first"] == standard
    assert parts["rest"]["tools"]["n"] > standard["tools"]["n"]


def test_fresh_scores_pool_the_rest_of_seed_0_with_all_of_seed_1() -> None:
    seed0 = [
        ItemResult("heldout-000003#0", "vqa", True, "red", "red"),  # chosen on: left out
        ItemResult("heldout-000300#0", "vqa", False, "2", "3"),
    ]
    seed1 = [
        ItemResult("heldout-000003#0", "vqa", True, "2", "2"),  # another seed: a fresh conversation
        ItemResult("heldout-000004#1", "vqa", True, "blue", "blue"),
    ]
    assert fresh_scores(seed0, seed1, first=200) == {"vqa": {"n": 3, "accuracy": 2 / 3}}
