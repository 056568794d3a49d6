"""``recipes/demo/digit_weights.py``: box-coordinate digits found by token, and weighed in the training loss."""

from __future__ import annotations

import contextlib
import json
import math
import sys
from pathlib import Path

import torch

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "demo"
sys.path.insert(0, str(RECIPE))

from digit_weights import coordinate_digits  # noqa: E402
from loss_by_token import loss_by_category  # noqa: E402
from train import ChatData, MixSpec, joint_loss  # noqa: E402

from qvl_agent.model.loading import demo_checkpoint_dir, load_model  # noqa: E402
from qvl_agent.model.tokenization_qwen import QWenTokenizer  # noqa: E402


def test_each_digit_of_each_box_coordinate_is_numbered_and_nothing_else_is() -> None:
    tokenizer = QWenTokenizer.from_pretrained(demo_checkpoint_dir())
    ids = tokenizer.encode("<ref>the star</ref><box>(120,88),(310,270)</box> There are 12 stars")
    marks = coordinate_digits(ids, tokenizer)

    marked = [(tokenizer.decode([i]), k) for i, k in zip(ids, marks, strict=True) if k >= 0]
    assert "".join(text for text, _ in marked) == "12088310270"  # the count "12" after the box is not one
    assert [k for _, k in marked] == [0, 1, 2, 0, 1, 0, 1, 2, 0, 1, 2]


def test_a_weighted_step_leaves_out_exactly_the_zero_weighted_digits_and_logs_the_plain_loss() -> None:
    model, tokenizer = load_model("demo")
    model.eval()
    mix = json.loads((RECIPE / "configs" / "demo_bind3.json").read_text())["joint"]["mix"]
    visual = model.transformer.visual
    data = ChatData(
        7,
        MixSpec(**{**mix, "kinds": {"single": 1.0}}),
        tokenizer,
        visual.image_processor,
        math.isqrt(visual.n_queries),
        batch=2,
        max_length=2048,
        digit_weights=[1.0, 0.0, 1.0],  # every coordinate's second digit out
    )
    batch = data[3000]

    weights = batch["loss_weights"]
    assert weights.shape == batch["input_ids"].shape
    assert 0 < int((weights == 0).sum()) < int((batch["labels"] != -100).sum())
    with torch.no_grad():
        weighted, metrics = joint_loss(model, None, batch, [], 0.0, contextlib.nullcontext)
        plain = model(
            **{k: batch[k] for k in ("input_ids", "attention_mask", "labels")},
            pixel_values=batch["pixel_values"],
        ).loss
    # the logs keep the plain mean, so runs with and without weights compare
    assert math.isclose(float(metrics["loss_single"]), float(plain), rel_tol=1e-4)
    # the weighted loss is the plain one less the second digits' share, divided by the same token count
    stats = loss_by_category(model, tokenizer, [batch])
    supervised = sum(count for _, count, _ in stats.values())
    second_digits = stats["single: box digit 1"]
    assert second_digits[1] == int((weights[:, 1:][batch["labels"][:, 1:] != -100] == 0).sum())
    expected = (float(plain) * supervised - second_digits[0]) / supervised
    assert math.isclose(float(weighted), expected, rel_tol=1e-3)
