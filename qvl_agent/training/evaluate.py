"""Scoring a model on held-out conversations: grounding, VQA, multi-image and ReAct tool use.

Every question turn of a conversation becomes one :class:`EvalItem` (earlier turns are the history, with their
reference answers). Items are run through any :class:`~qvl_agent.backends.ModelBackend` -- a local checkpoint,
the demo model or a remote OpenAI-compatible server -- and scored:

- ``grounding``: the first predicted box has IoU >= 0.5 with the reference box (acc@0.5);
- ``vqa`` (and ``caption``): exact match after VQA normalisation;
- ``multi-image``: turns with two or more pictures, scored like grounding or VQA by their reference;
- ``tools``: the first step is a well-formed ReAct reply, calls the right tool with the right arguments (or
  rightly calls none); then, given the reference observation, the final answer matches.

Besides the synthetic format it reads RefCOCO-style grounding JSONL (``image``, ``sent``, ``bbox`` in pixels,
``width``, ``height``) and VQA JSONL (``image``, ``question``, ``answer`` or ``answers``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from qvl_agent.data.format import Conversation, DataFormatError, image_refs, load_conversations
from qvl_agent.data.react_samples import split_episode
from qvl_agent.plugins.grounding import picture_asked_about
from qvl_agent.training.metrics import (
    ToolCallScore,
    box_correct,
    exact_match,
    extract_boxes,
    final_answer,
    iou,
    score_tool_call,
)

TASK_NAMES = ("grounding", "vqa", "multi-image", "tools", "caption")
DEFAULT_SYSTEM = "You are a helpful assistant."


@dataclass
class EvalItem:
    """One question to ask: history (reference answers), the query, the reference answer, the pictures."""

    id: str
    task: str
    query: str
    expected: str
    history: list[tuple[str, str]] = field(default_factory=list)
    #: pictures in the order of the ``<img>`` spans of history then query (PIL images or paths)
    images: list[Any] = field(default_factory=list)
    #: pictures that only appear in the reference answer (e.g. a zoom tool's output), in order
    answer_images: list[Any] = field(default_factory=list)


@dataclass
class ItemResult:
    id: str
    task: str
    correct: bool
    prediction: str
    expected: str
    tool: dict[str, bool] | None = None
    final_answer_correct: bool | None = None


def _is_react(text: str) -> bool:
    return "\nAction Input: the input to the action\n" in text


def turn_task(conversation: Conversation, turn: int) -> str:
    """The category of question turn ``turn`` (index of the user turn)."""
    query, expected = conversation.turns[turn]["value"], conversation.turns[turn + 1]["value"]
    if _is_react(query):
        return "tools"
    pictures = sum(len(image_refs(t["value"])) for t in conversation.turns[: turn + 1] if t["from"] == "user")
    if pictures >= 2:
        return "multi-image"
    if "<box>" in expected and "<box>" not in query:
        return "grounding"
    if conversation.task == "caption" and turn == 0:
        return "caption"
    return "vqa"


def items_from_conversations(
    conversations: Iterable[Conversation], images: Callable[[Conversation], dict[str, Any]]
) -> list[EvalItem]:
    """One item per question turn; ``images(conv)`` maps each ``<img>`` reference to a picture or path."""
    items = []
    for conv in conversations:
        pictures = images(conv)
        history: list[tuple[str, str]] = []
        refs_so_far: list[str] = []
        for t in range(0, len(conv.turns) - 1, 2):
            query, expected = conv.turns[t]["value"], conv.turns[t + 1]["value"]
            refs_so_far += image_refs(query)
            items.append(
                EvalItem(
                    id=f"{conv.id}#{t // 2}",
                    task=turn_task(conv, t),
                    query=query,
                    expected=expected,
                    history=list(history),
                    images=[pictures.get(r, r) for r in refs_so_far],
                    answer_images=[pictures.get(r, r) for r in image_refs(expected)],
                )
            )
            history.append((query, expected))
            refs_so_far += image_refs(expected)
    return items


def synthetic_items(n: int, seed: int = 0, config: Any = None) -> list[EvalItem]:
    """Items of the first ``n`` held-out synthetic conversations."""
    from qvl_agent.data.synthetic import SyntheticDataset

    samples = list(SyntheticDataset(n, "heldout", seed, config))
    convs = [Conversation(s.id, s.conversations, {p: p for p in s.images}, s.task) for s in samples]
    by_id = {s.id: s.images for s in samples}
    return items_from_conversations(convs, lambda c: by_id[c.id])


def _jsonl(path: Path) -> list[dict[str, Any]]:
    records = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataFormatError(path, f"line {n}", f"bad JSON: {exc.msg}") from None
    return records


def _image_path(ref: str, base: Path, path: Path, n: int) -> str:
    candidate = Path(ref) if Path(ref).is_absolute() else base / ref
    if "://" in ref or candidate.is_file():
        return str(candidate) if "://" not in ref else ref
    raise DataFormatError(path, f"line {n}", f"missing image {ref!r}")


def items_from_file(path: str | Path, grounding_prompt: str = "Find {sent}.") -> list[EvalItem]:
    """Items from a fine-tuning JSON/JSONL, a RefCOCO-style grounding JSONL or a VQA JSONL (detected by keys)."""
    path = Path(path)
    if path.suffix == ".jsonl":
        records = _jsonl(path)
        if records and "conversations" not in records[0]:
            items = []
            for n, r in enumerate(records, 1):
                if "image" not in r:
                    raise DataFormatError(path, f"line {n}", "missing 'image'")
                image = _image_path(r["image"], path.parent, path, n)
                header = f"Picture 1: <img>{image}</img>\n"
                if "sent" in r and "bbox" in r:
                    try:
                        w, h = float(r["width"]), float(r["height"])
                        x1, y1, x2, y2 = (float(v) for v in r["bbox"])
                    except (KeyError, TypeError, ValueError):
                        raise DataFormatError(
                            path,
                            f"line {n}",
                            "grounding needs 'bbox' [x1,y1,x2,y2] pixels, 'width', 'height'",
                        ) from None
                    if r.get("bbox_format") == "xywh":
                        x2, y2 = x1 + x2, y1 + y2
                    box = [int(x1 / w * 1000), int(y1 / h * 1000), int(x2 / w * 1000), int(y2 / h * 1000)]
                    expected = f"<ref>{r['sent']}</ref><box>({box[0]},{box[1]}),({box[2]},{box[3]})</box>"
                    query = header + grounding_prompt.format(sent=r["sent"])
                    items.append(EvalItem(str(r.get("id", n)), "grounding", query, expected, images=[image]))
                elif "question" in r and ("answer" in r or "answers" in r):
                    answers = r.get("answers") or [r["answer"]]
                    answers = [a["answer"] if isinstance(a, dict) else str(a) for a in answers]
                    items.append(
                        EvalItem(
                            str(r.get("id", n)),
                            "vqa",
                            header + r["question"],
                            "\n".join(answers),
                            images=[image],
                        )
                    )
                else:
                    raise DataFormatError(
                        path,
                        f"line {n}",
                        "expected grounding keys (sent, bbox) or VQA keys (question, answer)",
                    )
            return items
    conversations = load_conversations(path)
    return items_from_conversations(conversations, lambda c: c.images)


# --------------------------------------------------------------------------------------------- running


def _open(picture: Any) -> Image.Image:
    if isinstance(picture, Image.Image):
        return picture.convert("RGB")
    from qvl_agent.model.image_processing import load_image

    return load_image(picture)


def score_answer(task: str, prediction: str, expected: str) -> bool:
    """Grounding by IoU >= 0.5 when the reference has a box, else exact match against any reference line."""
    if extract_boxes(expected):
        return box_correct(prediction, expected)
    return any(exact_match(prediction, e) for e in expected.split("\n"))


def run_item(
    backend: Any, item: EvalItem, system: str = DEFAULT_SYSTEM, max_new_tokens: int = 256
) -> ItemResult:
    """Ask ``backend`` the item's question (and, for a tool call, continue after the reference observation)."""
    from qvl_agent.messages import GenerationRequest
    from qvl_agent.prompting import react

    images = [_open(p) for p in item.images]
    stop = react.stop_words(None, True) if item.task == "tools" else []
    request = GenerationRequest(
        system=system,
        history=item.history,
        query=item.query,
        images=images,
        stop=stop or [],
        max_new_tokens=max_new_tokens,
    )
    prediction = backend.generate(request).text
    if item.task != "tools":
        return ItemResult(
            item.id, item.task, score_answer(item.task, prediction, item.expected), prediction, item.expected
        )

    call_part, observation, _ = split_episode(item.expected)
    tool: ToolCallScore = score_tool_call(prediction, call_part)
    expected_answer = final_answer(item.expected)
    if observation is None:  # no tool needed: the first reply is the whole answer
        answer_ok = tool.right_tool and exact_match(final_answer(prediction), expected_answer)
    elif tool.right_arguments:
        done = f"{call_part}\nObservation: {observation}\nThought:"
        follow = GenerationRequest(
            system=system,
            history=[*item.history, (item.query, done)],
            query=None,
            images=images + [_open(p) for p in item.answer_images],
            max_new_tokens=max_new_tokens,
        )
        rest = backend.generate(follow).text
        prediction = f"{prediction}\n[after observation]{rest}"
        answer_ok = exact_match(final_answer(rest), expected_answer)
    else:
        answer_ok = False
    return ItemResult(
        item.id,
        "tools",
        tool.right_arguments and answer_ok,
        prediction,
        item.expected,
        tool.as_dict(),
        answer_ok,
    )


def summarize(results: list[ItemResult]) -> dict[str, dict[str, float]]:
    """Per-task scores: ``n`` and ``accuracy``; tools also ``valid_format``, ``right_tool``,
    ``right_arguments``, ``final_answer``."""
    summary: dict[str, dict[str, float]] = {}
    for task in TASK_NAMES:
        rs = [r for r in results if r.task == task]
        if not rs:
            continue
        entry: dict[str, float] = {"n": len(rs), "accuracy": sum(r.correct for r in rs) / len(rs)}
        if task == "tools":
            for key in ("valid_format", "right_tool", "right_arguments"):
                entry[key] = sum(bool(r.tool and r.tool[key]) for r in rs) / len(rs)
            entry["final_answer"] = sum(bool(r.final_answer_correct) for r in rs) / len(rs)
        summary[task] = entry
    return summary


def select(items: list[EvalItem], task: str, limit: int | None) -> list[EvalItem]:
    """Items of one task (or ``all``), at most ``limit`` per task."""
    tasks = TASK_NAMES if task == "all" else (task,)
    out = []
    for t in tasks:
        chosen = [i for i in items if i.task == t]
        out += chosen[:limit] if limit else chosen
    return out


def _picture_asked_about(item: EvalItem) -> int:
    """Index into ``item.images`` of the picture a grounding question is about ("Find the red star in
    Picture 1." names it; otherwise the most recent picture)."""
    return picture_asked_about(item.query, len(item.images))


def sample_boxes(items: list[EvalItem], results: list[ItemResult], k: int = 4) -> list[dict[str, Any]]:
    """Up to ``k`` grounding examples: picture, reference and predicted boxes in [0,1000), IoU."""
    examples, seen = [], set()
    for item, result in zip(items, results, strict=True):
        if (
            result.task not in ("grounding", "multi-image")
            or not extract_boxes(item.expected)
            or not item.images
        ):
            continue
        conversation = item.id.split("#")[0]
        if conversation in seen:
            continue
        seen.add(conversation)
        true = extract_boxes(item.expected)[0][1]
        pred = extract_boxes(result.prediction)
        examples.append(
            {
                "image": _open(item.images[_picture_asked_about(item)]),
                "label": extract_boxes(item.expected)[0][0] or item.id,
                "true": true,
                "pred": pred[0][1] if pred else None,
                "iou": iou(pred[0][1], true) if pred else 0.0,
            }
        )
        if len(examples) >= k:
            break
    return examples
