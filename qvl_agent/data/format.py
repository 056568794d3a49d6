"""Reading and validating data in the original Qwen-VL fine-tuning format.

A file is a JSON list (or JSON Lines, one record per line) of records::

    {"id": "identity_0", "conversations": [{"from": "user", "value": "Picture 1: <img>a.png</img>\\nWhat is it?"},
                                           {"from": "assistant", "value": "A cat."}]}

Turns alternate user / assistant, starting with the user and ending with the assistant. Pictures are referenced
inside ``<img>…</img>``; relative paths are resolved against the file's folder, then the working directory.
Every problem raises :class:`DataFormatError` naming the file, the record and what is wrong.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qvl_agent.model.errors import InputError

ROLES = ("user", "assistant")
_IMG = re.compile(r"<img>(.*?)</img>", re.DOTALL)
MAX_IMAGE_REF_BYTES = 255


class DataFormatError(InputError):
    """Malformed training or evaluation data; the message names the file, the record and the problem."""

    def __init__(self, file: str | Path, record: str | None, problem: str) -> None:
        where = f"{file}: {record}: " if record else f"{file}: "
        super().__init__(where + problem)
        self.file, self.record, self.problem = str(file), record, problem


@dataclass
class Conversation:
    """A validated record: its turns and where each referenced picture lives."""

    id: str
    turns: list[dict[str, str]]
    #: path as written inside ``<img>`` -> resolved file (or the same string for URLs / in-memory pictures)
    images: dict[str, str] = field(default_factory=dict)
    task: str | None = None
    source: str = ""

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "conversations": self.turns}
        if self.task:
            out["task"] = self.task
        return out


def image_refs(text: str) -> list[str]:
    """The references inside every ``<img>…</img>`` of ``text``, in order."""
    return _IMG.findall(text)


def check_image_tags(text: str) -> str | None:
    """A description of what is wrong with the ``<img>`` tags in ``text``, or None when they are well formed."""
    depth = 0
    for match in re.finditer(r"</?img>", text):
        if match.group() == "<img>":
            if depth:
                return f"nested <img> at character {match.start()}"
            depth = 1
        else:
            if not depth:
                return f"</img> without <img> at character {match.start()}"
            depth = 0
    if depth:
        return "unclosed <img> (no matching </img>)"
    for ref in image_refs(text):
        if not ref.strip():
            return "empty <img></img>"
        if len(ref.encode("utf-8")) > MAX_IMAGE_REF_BYTES:
            return f"image reference longer than {MAX_IMAGE_REF_BYTES} bytes: {ref[:40]!r}…"
    return None


def _resolve_image(ref: str, base: Path) -> Path | None:
    if re.match(r"^[a-z][a-z0-9+.-]*://", ref) or ref.startswith("data:"):
        return None  # URLs are fetched later; not checked here
    path = Path(ref)
    for candidate in [path] if path.is_absolute() else [base / path, Path.cwd() / path]:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(ref)


def validate_record(
    record: Any, index: int, file: str | Path, base: Path | None, check_images: bool = True
) -> Conversation:
    """Check one record; ``base`` is the folder relative picture paths are resolved against."""
    label = f"record {index}"
    if not isinstance(record, dict):
        raise DataFormatError(
            file, label, f"expected an object with 'conversations', got {type(record).__name__}"
        )
    if "id" in record:
        label = f"record {index} (id {record['id']!r})"
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise DataFormatError(file, label, "'conversations' must be a non-empty list")
    images: dict[str, str] = {}
    for t, turn in enumerate(turns):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            raise DataFormatError(file, label, f"turn {t}: expected {{'from': ..., 'value': <string>}}")
        role = turn.get("from")
        expected = ROLES[t % 2]
        if role not in ROLES:
            raise DataFormatError(
                file, label, f"turn {t}: wrong role {role!r}; expected 'user' or 'assistant'"
            )
        if role != expected:
            raise DataFormatError(
                file,
                label,
                f"turn {t}: wrong role {role!r}; turns must alternate user/assistant starting with user",
            )
        problem = check_image_tags(turn["value"])
        if problem:
            raise DataFormatError(file, label, f"turn {t}: {problem}")
        for ref in image_refs(turn["value"]):
            if not check_images or base is None:
                images[ref] = ref
                continue
            try:
                resolved = _resolve_image(ref, base)
            except FileNotFoundError:
                raise DataFormatError(
                    file,
                    label,
                    f"turn {t}: missing image {ref!r} (looked in {base} and the working directory)",
                ) from None
            images[ref] = str(resolved) if resolved else ref
    if turns[-1]["from"] != "assistant":
        raise DataFormatError(file, label, "the last turn must be from the assistant")
    return Conversation(
        str(record.get("id", index)), [dict(t) for t in turns], images, record.get("task"), str(file)
    )


def load_conversations(path: str | Path, check_images: bool = True) -> list[Conversation]:
    """Read and validate a ``.json`` (list) or ``.jsonl`` file of fine-tuning records."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, None, "file not found")
    text = path.read_text(encoding="utf-8")
    records: list[Any]
    if path.suffix == ".jsonl":
        records = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise DataFormatError(
                        path, f"line {n}", f"bad JSON: {exc.msg} (column {exc.colno})"
                    ) from None
    else:
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataFormatError(
                path, None, f"bad JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
            ) from None
        if not isinstance(records, list):
            raise DataFormatError(
                path, None, f"expected a JSON list of records, got {type(records).__name__}"
            )
    if not records:
        raise DataFormatError(path, None, "no records")
    return [validate_record(r, i, path, path.parent, check_images) for i, r in enumerate(records)]
