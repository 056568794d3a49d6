"""``recipes/demo/average.py``: the weighted mean of checkpoints' weights."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "recipes" / "demo"))

from average import average_state_dicts  # noqa: E402


def test_float_tensors_are_averaged_with_weights_and_others_kept() -> None:
    a = {"w": torch.tensor([0.0, 4.0], dtype=torch.float16), "ids": torch.tensor([1, 2])}
    b = {"w": torch.tensor([4.0, 0.0]), "ids": torch.tensor([7, 7])}
    out = average_state_dicts([a, b], [1.0, 3.0])
    assert out["w"].dtype == torch.float32
    assert torch.equal(out["w"], torch.tensor([3.0, 1.0]))
    assert torch.equal(out["ids"], a["ids"])


def test_checkpoints_with_different_tensors_are_refused() -> None:
    with pytest.raises(ValueError, match="tensor names differ"):
        average_state_dicts([{"a": torch.zeros(1)}, {"b": torch.zeros(1)}], [1.0, 1.0])
