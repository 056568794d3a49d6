"""Weights in the LM loss for the digits of box coordinates (a demo config's ``joint.digit_weights``).

Two thirds of the LM loss sits on the boxes' hundreds and tens digits (``loss_by_token.py``; README → *Where
the LM loss sits*), finer than the image tokens can place a box, while the answers the held-out misses are
made of (shape, size and colour words, counts) are a fifth of it. ``"digit_weights": [1.0, 0.3, 1.0]`` weighs
each coordinate's first, second and third digit token by that much; every other token keeps weight 1, and the
loss is still divided by the number of supervised tokens, so the other tokens' gradients are unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from attention_targets import token_word

IGNORE_INDEX = -100


def coordinate_digits(input_ids: list[int], tokenizer) -> list[int]:
    """For each position of ``input_ids``: which digit of a box coordinate its token is (0 for the first), or -1
    for a token that is not a digit inside ``<box>…</box>``."""
    box_start, box_end = tokenizer.special_tokens["<box>"], tokenizer.special_tokens["</box>"]
    out, inside, run = [], False, 0
    for token in input_ids:
        if token in (box_start, box_end):
            inside = token == box_start
        if inside and token_word(tokenizer, token).isdigit():
            out.append(run)
            run += 1
        else:
            out.append(-1)
            run = 0
    return out


def digit_loss_weights(input_ids: torch.Tensor, tokenizer, weights: list[float]) -> torch.Tensor:
    """A ``[batch, length]`` float tensor: ``weights[k]`` where a token is a coordinate's digit ``k``, else 1."""
    out = torch.ones(input_ids.shape, dtype=torch.float32)
    for row, ids in enumerate(input_ids.tolist()):
        for pos, k in enumerate(coordinate_digits(ids, tokenizer)):
            if 0 <= k < len(weights):
                out[row, pos] = weights[k]
    return out


def weighted_lm_loss(
    logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The shifted causal-LM loss with each label's token weighed by ``weights`` (same shape as ``labels``),
    divided by the number of supervised tokens; and the plain (unweighted) mean, detached, for the logs."""
    labels, weights = labels[:, 1:], weights[:, 1:]
    nll = F.cross_entropy(
        logits[:, :-1].float().transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none"
    )
    count = (labels != IGNORE_INDEX).sum().clamp(min=1)
    return (nll * weights).sum() / count, (nll.sum() / count).detach()
