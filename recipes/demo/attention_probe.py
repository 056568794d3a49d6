"""Where does each attention head look when the answer is about an object? By question form.

    python recipes/demo/attention_probe.py recipes/demo/runs/demo_attn3/final --kind multi --n 30

For ``--n`` fresh training-distribution conversations of one kind (data seed 7, not a training seed), every
turn with :mod:`attention_targets` object targets is probed at the position predicting its answer's first
token (for a grounding answer, the ``</ref>`` before the box): the attention mass each head of each layer puts
on the image tokens of the objects asked about. One row per question form (its first words, colours and
shapes folded to ``C`` / ``S``), one block of heads per layer. A head the recipe supervises should be high
where the answer needs it; the forms where it is low are where binding fails.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import re
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from attention_targets import (  # noqa: E402
    AttentionSupervision,
    log_target_mass,
    query_targets,
    stack_pairs,
    turn_objects,
)
from demo_data import MixSpec, dense_sample  # noqa: E402

from qvl_agent.data.scenes import COLOURS, SHAPES  # noqa: E402
from qvl_agent.model.loading import load_model  # noqa: E402
from qvl_agent.training.encoding import encode_conversation  # noqa: E402

FOLD = [
    (re.compile(r"<box>.*?</box>"), "<box>"),
    (re.compile(rf"\b({'|'.join(COLOURS)})\b"), "C"),
    (re.compile(rf"\b({'|'.join(SHAPES)})s?\b"), "S"),
]


def question_form(question: str) -> str:
    """The first four words of a question, its box, colours and shapes folded."""
    text = question.rsplit("</img>\n", 1)[-1]
    for pattern, repl in FOLD:
        text = pattern.sub(repl, text)
    return " ".join(text.split()[:4])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--kind", default="multi", choices=["single", "multi", "tools"])
    parser.add_argument("--n", type=int, default=30, help="conversations to probe")
    parser.add_argument(
        "--config", type=Path, default=HERE / "configs" / "demo_attn3.json", help="its data mix"
    )
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer = load_model(args.checkpoint, dtype="fp32")
    spec = dataclasses.replace(
        MixSpec(**json.loads(args.config.read_text())["joint"]["mix"]), kinds={args.kind: 1.0}
    )
    processor = model.transformer.visual.image_processor
    grid = int(model.config.visual["n_queries"] ** 0.5)
    layers, heads = len(model.transformer.h), model.config.num_attention_heads
    mass: dict[str, torch.Tensor] = collections.defaultdict(lambda: torch.zeros(layers, heads))
    count: collections.Counter[str] = collections.Counter()
    watch = AttentionSupervision(model, list(range(layers)), 0)
    for i in range(args.n):
        sample = dense_sample(i, "probe", 7, spec)
        enc = encode_conversation(tokenizer, sample.conversations)
        turns = turn_objects(sample, grid, spec.coord_step, coord_snap=spec.coord_snap)
        pictures = [sample.images[r] for r in enc.image_refs]
        with watch, torch.no_grad():
            model(
                input_ids=torch.tensor([enc.input_ids]),
                pixel_values=processor(pictures) if pictures else None,
            )
        for t in range(len(turns)):
            only = [objects if j == t else [] for j, objects in enumerate(turns)]
            pairs = query_targets(enc.input_ids, enc.labels, enc.image_refs, only, tokenizer, 8)
            if not pairs:
                continue
            batch = stack_pairs([pairs[:1]], 8)
            form = question_form(sample.conversations[2 * t]["value"])
            for head in range(heads):
                watch.head = head
                with torch.no_grad():
                    for layer, log_p in enumerate(watch.log_attention(batch["attn_query"])):
                        mass[form][layer, head] += log_target_mass(log_p, batch["attn_keys"]).exp()[0]
            count[form] += 1
    print(f"{'n':>3} {'question form':38s} " + " | ".join(f"layer {i} heads" for i in range(layers)))
    for form, n in count.most_common():
        rows = (mass[form] / n).tolist()
        print(f"{n:3d} {form[:38]:38s} " + " | ".join(" ".join(f"{v:.2f}" for v in row) for row in rows))


if __name__ == "__main__":
    main()
