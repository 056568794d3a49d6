"""Where a checkpoint's LM loss sits: per answer-token category, on training-mix batches.

    python recipes/demo/loss_by_token.py qvl_agent/assets/demo recipes/demo/configs/demo_bind3.json --batches 24

Batches come from the config's ``joint.mix`` (data seed 7, steps 3,000 on, so not the ones a run trained on).
Every supervised token is put in a category (a box coordinate's first / second / third digit, box syntax,
colour, shape, size, another number, end of turn, other text); with ``--by-question`` the colour, shape, size
and number tokens are split further by the first words of their question. Prints each category's share of
the total loss, its mean loss and how often the model's top token is the right one.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from digit_weights import coordinate_digits  # noqa: E402
from train import ChatData, MixSpec  # noqa: E402

from qvl_agent.data.scenes import COLOURS, SHAPES, SIZES  # noqa: E402
from qvl_agent.model.loading import load_model  # noqa: E402


def token_category(token: str) -> str:
    """The category of a token that is not a box coordinate's digit (those are ``box digit k``, from
    :func:`digit_weights.coordinate_digits`)."""
    word = token.strip()
    if word.isdigit():
        return "number"
    if word in COLOURS:
        return "colour"
    if word in SHAPES or word.removesuffix("s") in SHAPES:
        return "shape"
    if word in SIZES:
        return "size"
    if word in {"<box>", "</box>", "<ref>", "</ref>", "(", ")", ",", "),("}:
        return "box syntax"
    if word in {"<|im_end|>", "<|endoftext|>"}:
        return "end"
    return "other text"


def question_of(text: str) -> str:
    """The start of the last user turn in ``text``: its first 40 characters cut to whole words, tags left out."""
    question = text.rsplit("<|im_start|>user\n", 1)[-1].split("\n")[0]
    return " ".join(w for w in question.split() if not w.startswith("<"))[:40].rsplit(" ", 1)[0]


@torch.no_grad()
def loss_by_category(model, tokenizer, batches, by_question: bool = False) -> dict[str, list[float]]:
    """``{category: [loss sum, tokens, top-1 right]}`` over ``batches`` (``ChatData`` items)."""
    stats: dict[str, list[float]] = defaultdict(lambda: [0.0, 0, 0])
    for batch in batches:
        logits = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            pixel_values=batch.get("pixel_values"),
        ).logits[:, :-1]
        logprobs = torch.log_softmax(logits.float(), -1)
        labels = batch["labels"][:, 1:]
        nll = -logprobs.gather(-1, labels.clamp(min=0)[..., None])[..., 0]
        right = logprobs.argmax(-1) == labels
        rows = batch["input_ids"].tolist()
        digits = [coordinate_digits(ids, tokenizer) for ids in rows]
        for row, pos in (labels != -100).nonzero().tolist():
            ids = rows[row]
            k = digits[row][pos + 1]  # labels[:, pos] is input_ids[:, pos + 1]
            category = (
                f"box digit {k}" if k >= 0 else token_category(tokenizer.decode([int(labels[row, pos])]))
            )
            if by_question and category in {"colour", "shape", "size", "number"}:
                category += " | " + question_of(tokenizer.decode(ids[: pos + 1]))
            entry = stats[f"{batch['kind']}: {category}"]
            entry[0] += float(nll[row, pos])
            entry[1] += 1
            entry[2] += int(right[row, pos])
    return dict(stats)


def mix_batches(model, tokenizer, joint: dict[str, Any], batch_size: int, count: int) -> list[dict[str, Any]]:
    """``count`` batches of a demo config's ``joint.mix`` for ``model``'s vision tower (data seed 7, steps
    3,000 on, so not the batches a run trained on)."""
    visual = model.transformer.visual
    data = ChatData(
        7,
        MixSpec(**joint["mix"]),
        tokenizer,
        visual.image_processor,
        math.isqrt(visual.n_queries),
        batch_size,
        joint.get("max_length", 2048),
    )
    return [data[3000 + i] for i in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("config", type=Path, help="a demo config; its joint.mix makes the batches")
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--by-question", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer = load_model(args.checkpoint)
    model.eval()
    joint = json.loads(args.config.read_text())["joint"]
    batches = mix_batches(model, tokenizer, joint, args.batch_size, args.batches)
    print("batches:", dict(Counter(b["kind"] for b in batches)))
    stats = loss_by_category(model, tokenizer, batches, args.by_question)
    total = sum(s[0] for s in stats.values())
    print(f"{'category':44s} {'share':>6s} {'mean':>6s} {'tokens':>6s} {'top-1':>6s}")
    for name, (loss, count, right) in sorted(stats.items(), key=lambda kv: -kv[1][0]):
        print(f"{name:44s} {loss / total:6.1%} {loss / count:6.3f} {count:6d} {right / count:6.3f}")


if __name__ == "__main__":
    main()
