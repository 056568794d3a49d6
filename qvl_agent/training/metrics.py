"""Evaluation metrics: box IoU, VQA exact match, and ReAct tool-call scoring.

All functions take plain strings/numbers so they can be unit-tested on hand-made predictions.
"""

from __future__ import annotations

import ast
import json
import operator
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from qvl_agent.prompting import react

_BOX = re.compile(
    r"(?:<ref>(?P<ref>.*?)</ref>)?<box>\((?P<x1>-?\d+),(?P<y1>-?\d+)\),\((?P<x2>-?\d+),(?P<y2>-?\d+)\)</box>"
)
_ARTICLES = {"a", "an", "the"}
_PUNCT = re.compile(r"[^\w\s]")


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``(x1, y1, x2, y2)`` boxes (0 for degenerate boxes)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area_a = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1])
    area_b = max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0


def extract_boxes(text: str) -> list[tuple[str | None, tuple[int, int, int, int]]]:
    """Every ``[<ref>label</ref>]<box>(x1,y1),(x2,y2)</box>`` in ``text`` as ``(label, box)``."""
    return [
        (m.group("ref"), (int(m.group("x1")), int(m.group("y1")), int(m.group("x2")), int(m.group("y2"))))
        for m in _BOX.finditer(text)
    ]


def box_correct(prediction: str, reference: str, threshold: float = 0.5) -> bool:
    """True when the first predicted box overlaps the first reference box with IoU >= ``threshold``."""
    pred, ref = extract_boxes(prediction), extract_boxes(reference)
    if not ref:
        raise ValueError(f"reference has no <box>: {reference[:80]!r}")
    return bool(pred) and iou(pred[0][1], ref[0][1]) >= threshold


def normalize_answer(text: str) -> str:
    """Lower-case, punctuation and articles removed, whitespace collapsed (VQA-style)."""
    words = _PUNCT.sub(" ", text.lower()).split()
    return " ".join(w for w in words if w not in _ARTICLES)


def exact_match(prediction: str, reference: str) -> bool:
    """VQA exact match after :func:`normalize_answer`."""
    return normalize_answer(prediction) == normalize_answer(reference)


_OPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}


def arithmetic_value(expression: str) -> float | None:
    """Value of a plain arithmetic expression (numbers, + - * / // % **, parentheses), or None if not one."""

    def ev(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, (int, float))
            and not isinstance(node.value, bool)
        ):
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
            v = ev(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            left, right = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Pow) and abs(right) > 64:
                raise ValueError("exponent too large")
            return _OPS[type(node.op)](left, right)
        raise ValueError("not arithmetic")

    if len(expression) > 200:
        return None
    try:
        return float(ev(ast.parse(expression.strip(), mode="eval")))
    except (SyntaxError, ValueError, ZeroDivisionError, TypeError, OverflowError):
        return None


def arguments_match(predicted: Any, expected: Any, box_threshold: float = 0.5) -> bool:
    """Tool arguments equal in meaning: arithmetic strings by value, 4-number boxes by IoU, the rest exactly."""
    if isinstance(expected, dict):
        return (
            isinstance(predicted, dict)
            and set(predicted) == set(expected)
            and all(arguments_match(predicted[k], v, box_threshold) for k, v in expected.items())
        )
    if (
        isinstance(expected, list)
        and len(expected) == 4
        and all(isinstance(v, (int, float)) for v in expected)
    ):
        return (
            isinstance(predicted, list)
            and len(predicted) == 4
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in predicted)
            and iou(predicted, expected) >= box_threshold
        )
    if isinstance(expected, str) and isinstance(predicted, str):
        if predicted.strip() == expected.strip():
            return True
        a, b = arithmetic_value(predicted), arithmetic_value(expected)
        return a is not None and b is not None and abs(a - b) < 1e-9
    return predicted == expected


@dataclass
class ToolCallScore:
    """How a model's ReAct reply compares with the expected one."""

    valid_format: bool
    right_tool: bool
    right_arguments: bool

    def as_dict(self) -> dict[str, bool]:
        return {
            "valid_format": self.valid_format,
            "right_tool": self.right_tool,
            "right_arguments": self.right_arguments,
        }


def parse_call(text: str) -> tuple[str | None, Any, bool]:
    """``(tool name or None, parsed arguments, well formed)`` of a ReAct reply.

    Well formed: a call whose ``Action Input`` is a JSON object, or a plain ``Final Answer:`` without a call.
    """
    parsed = react.parse_response(text)
    call = parsed["function_call"]
    if call is None:
        return None, None, "\nFinal Answer: " in "\n" + text or text.startswith("Final Answer: ")
    try:
        args = json.loads(call["arguments"])
    except json.JSONDecodeError:
        return call["name"], None, False
    return call["name"], args, isinstance(args, dict)


def score_tool_call(prediction: str, expected: str) -> ToolCallScore:
    """Compare the model's first ReAct step with the expected one (a call, or a direct final answer)."""
    p_name, p_args, p_ok = parse_call(prediction)
    e_name, e_args, _ = parse_call(expected)
    right_tool = p_ok and p_name == e_name
    if e_name is None:
        return ToolCallScore(p_ok, right_tool, right_tool)
    return ToolCallScore(p_ok, right_tool, right_tool and arguments_match(p_args, e_args))


def final_answer(text: str) -> str:
    """The answer of a ReAct reply (after the last ``Final Answer:``), else the text itself."""
    z = text.rfind("Final Answer: ")
    return text[z + len("Final Answer: ") :].strip() if z >= 0 else text.strip()
