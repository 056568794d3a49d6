"""Turning conversations into training tensors: ChatML ids, assistant-only labels, pictures in span order.

The text is exactly what ``make_context`` builds at inference::

    <|im_start|>system\\n{system}<|im_end|>\\n<|im_start|>user\\n{q}<|im_end|>\\n<|im_start|>assistant\\n{a}<|im_end|>\\n…

Labels are -100 everywhere except the assistant answers and the ``<|im_end|>`` closing them (so the model learns
to stop). Inside a ReAct answer, the tool's observation text is left out of the loss: the tool writes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from qvl_agent.model.errors import InputError

IGNORE_INDEX = -100
DEFAULT_SYSTEM = "You are a helpful assistant."


@dataclass
class EncodedConversation:
    input_ids: list[int]
    labels: list[int]
    #: picture references in the order of their ``<img>`` spans
    image_refs: list[str]


def _observation_ranges(text: str) -> list[tuple[int, int]]:
    """Character ranges of tool observations: after ``\\nObservation:`` up to the next ``\\nThought:``."""
    ranges = []
    start = text.find("\nObservation:")
    while start >= 0:
        begin = start + len("\nObservation:")
        end = text.find("\nThought:", begin)
        end = len(text) if end < 0 else end
        ranges.append((begin, end))
        start = text.find("\nObservation:", end)
    return ranges


def _token_offsets(tokenizer, ids: Sequence[int]) -> list[int] | None:
    """Byte offset where each token starts in the UTF-8 text the ids encode (None if it cannot be traced)."""
    offsets, pos, i = [], 0, 0
    specials = {v: k for k, v in tokenizer.special_tokens.items()}
    while i < len(ids):
        tid = ids[i]
        if tid == tokenizer.img_start_id:
            j = ids.index(tokenizer.img_end_id, i)
            ref = bytes(t for t in ids[i + 1 : j] if t != tokenizer.img_pad_id)
            span_len = len(b"<img>") + len(ref) + len(b"</img>")
            offsets.extend([pos] * (j - i + 1))
            pos += span_len
            i = j + 1
            continue
        offsets.append(pos)
        token = specials.get(tid)
        pos += len(token.encode()) if token is not None else len(tokenizer.decoder[tid])
        i += 1
    return offsets


def encode_answer(tokenizer, text: str, mask_observations: bool = True) -> tuple[list[int], list[int]]:
    """Ids of an assistant answer and its labels (observations masked)."""
    allowed = set(tokenizer.IMAGE_ST)
    ids = tokenizer.encode(text, allowed_special=allowed)
    labels = list(ids)
    ranges = _observation_ranges(text) if mask_observations else []
    if ranges:
        data = text.encode("utf-8")
        offsets = _token_offsets(tokenizer, ids)
        if offsets is not None and len(data) == len(text):  # ASCII: characters are bytes
            for k, off in enumerate(offsets):
                if any(b <= off < e for b, e in ranges):
                    labels[k] = IGNORE_INDEX
        elif offsets is not None:
            byte_ranges = [(len(text[:b].encode()), len(text[:e].encode())) for b, e in ranges]
            for k, off in enumerate(offsets):
                if any(b <= off < e for b, e in byte_ranges):
                    labels[k] = IGNORE_INDEX
    return ids, labels


def encode_conversation(
    tokenizer,
    turns: Sequence[dict[str, str]],
    system: str = DEFAULT_SYSTEM,
    max_length: int | None = None,
    mask_observations: bool = True,
) -> EncodedConversation:
    """ChatML ids + labels of a user/assistant conversation.

    Trailing turn pairs that do not fit in ``max_length`` are dropped; if even the first pair does not fit,
    :class:`InputError` says how long it is.
    """
    allowed = set(tokenizer.IMAGE_ST)
    nl = tokenizer.encode("\n", allowed_special=allowed)
    im_start, im_end = tokenizer.im_start_id, tokenizer.im_end_id

    def block(role: str, content: list[int]) -> list[int]:
        return [im_start] + tokenizer.encode(role, allowed_special=allowed) + nl + content + [im_end] + nl

    ids = block("system", tokenizer.encode(system, allowed_special=allowed))
    labels = [IGNORE_INDEX] * len(ids)
    kept = 0
    for i in range(0, len(turns) - 1, 2):
        user_ids = block("user", tokenizer.encode(turns[i]["value"], allowed_special=allowed))
        answer_ids, answer_labels = encode_answer(tokenizer, turns[i + 1]["value"], mask_observations)
        head = [im_start] + tokenizer.encode("assistant", allowed_special=allowed) + nl
        pair_ids = user_ids + head + answer_ids + [im_end] + nl
        pair_labels = [IGNORE_INDEX] * (len(user_ids) + len(head)) + answer_labels + [im_end, IGNORE_INDEX]
        if max_length is not None and len(ids) + len(pair_ids) > max_length:
            if kept == 0:
                raise InputError(
                    f"the first question/answer pair needs {len(ids) + len(pair_ids)} tokens; max_length is {max_length}"
                )
            break
        ids += pair_ids
        labels += pair_labels
        kept += 1
    refs = _image_refs(tokenizer, ids)
    return EncodedConversation(ids, labels, refs)


def _image_refs(tokenizer, ids: Sequence[int]) -> list[str]:
    refs, i = [], 0
    while True:
        try:
            i = ids.index(tokenizer.img_start_id, i)
        except ValueError:
            return refs
        j = ids.index(tokenizer.img_end_id, i)
        refs.append(bytes(t for t in ids[i + 1 : j] if t != tokenizer.img_pad_id).decode("utf-8"))
        i = j + 1


def collate(batch: Sequence[EncodedConversation], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch: ``input_ids``, ``attention_mask``, ``labels`` (padding ignored)."""
    width = max(len(b.input_ids) for b in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, b in enumerate(batch):
        n = len(b.input_ids)
        input_ids[row, :n] = torch.tensor(b.input_ids)
        labels[row, :n] = torch.tensor(b.labels)
        mask[row, :n] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}
