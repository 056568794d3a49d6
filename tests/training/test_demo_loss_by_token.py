"""``recipes/demo/loss_by_token.py``: answer tokens sorted into categories, and the shipped model's loss split by them."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "demo"
sys.path.insert(0, str(RECIPE))

from loss_by_token import loss_by_category, mix_batches, question_of, token_category  # noqa: E402

from qvl_agent.model.loading import load_model  # noqa: E402


def test_tokens_are_sorted_by_what_they_say() -> None:
    assert token_category("3") == "number"  # box coordinates' digits are told apart by digit_weights
    assert token_category(" red") == "colour"
    assert token_category(" squares") == "shape"
    assert token_category(" tiny") == "size"
    assert token_category("<|im_end|>") == "end"
    assert token_category(" picture") == "other text"
    assert question_of("<|im_start|>user\nHow many red stars are there?\n<|im_start|>assistant\n") == (
        "How many red stars are"
    )


def test_the_shipped_model_loss_splits_into_categories_that_add_up() -> None:
    model, tokenizer = load_model("demo")
    model.eval()
    joint = json.loads((RECIPE / "configs" / "demo_bind3.json").read_text())["joint"]
    (batch,) = mix_batches(model, tokenizer, joint, batch_size=2, count=1)
    stats = loss_by_category(model, tokenizer, [batch])

    supervised = int((batch["labels"][:, 1:] != -100).sum())
    assert sum(count for _, count, _ in stats.values()) == supervised
    kind = batch["kind"]
    assert f"{kind}: end" in stats  # every answer ends its turn
    with torch.no_grad():
        loss = model(
            **{k: batch[k] for k in ("input_ids", "attention_mask", "labels")},
            pixel_values=batch.get("pixel_values"),
        ).loss
    assert math.isclose(sum(s for s, _, _ in stats.values()) / supervised, float(loss), rel_tol=1e-3)
