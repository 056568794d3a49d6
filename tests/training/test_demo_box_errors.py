"""``recipes/demo/box_errors.py`` measures the bias and precision of grounding boxes by size."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "demo"
sys.path.insert(0, str(RECIPE))

from box_errors import box_errors  # noqa: E402
from failures import box_size  # noqa: E402

from qvl_agent.training.evaluate import ItemResult  # noqa: E402


def answer(task: str, ref: str, reference: tuple, predicted: tuple | None) -> ItemResult:
    def text(box: tuple) -> str:
        return f"<ref>{ref}</ref><box>({box[0]},{box[1]}),({box[2]},{box[3]})</box>"

    prediction = text(predicted) if predicted else "I cannot see it."
    return ItemResult(
        id="heldout-000001#0", task=task, correct=False, prediction=prediction, expected=text(reference)
    )


def test_sizes_follow_the_scene_size_words() -> None:
    assert box_size((100, 100, 150, 140)) == "tiny"  # longer side 0.05
    assert box_size((100, 100, 220, 200)) == "small"  # 0.12
    assert box_size((0, 0, 300, 100)) == "large"  # 0.30
    assert box_size((0, 0, 80, 80)) == "tiny"  # 0.08: between ranges, nearest is tiny's 0.06


def test_errors_are_signed_means_over_answers_centred_inside_the_reference() -> None:
    tiny = (500, 500, 550, 550)
    predictions = [
        answer("grounding", "the red circle", tiny, (495, 495, 545, 545)),  # all four 5 units low
        answer("grounding", "the red circle", tiny, (505, 497, 557, 555)),  # +5, -3, +7, +5
        answer("grounding", "the red circle", tiny, (700, 700, 750, 750)),  # centre outside: not measured
        answer("grounding", "the red circle", tiny, None),  # no box: asked, not measured
        answer("grounding", 'the word "key"', tiny, (495, 495, 545, 545)),  # a word: skipped
        answer("multi-image", "the red circle", tiny, (495, 495, 545, 545)),  # another task: skipped
    ]
    sizes = box_errors(predictions)
    assert list(sizes) == ["tiny"]
    assert sizes["tiny"].asked == 4 and len(sizes["tiny"].errors) == 2
    assert sizes["tiny"].mean() == pytest.approx([0.0, -4.0, 1.0, 0.0])
    assert sizes["tiny"].mean(absolute=True) == pytest.approx([5.0, 4.0, 6.0, 5.0])


def test_a_missing_eval_output_is_a_one_line_error() -> None:
    result = subprocess.run(
        [sys.executable, str(RECIPE / "box_errors.py"), "no_such_checkpoint"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "no_such_checkpoint_n600.json" in result.stderr and "Traceback" not in result.stderr
