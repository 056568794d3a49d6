"""A safe calculator tool for qvl_agent.

The expression is parsed with :mod:`ast` and only numbers, arithmetic operators, parentheses and a short list
of math functions are evaluated — never ``eval``. Sizes are bounded so that ``9**9**9`` or a huge factorial
fails quickly with a clear message instead of eating the machine.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Any

from qvl_agent.hookspecs import hookimpl
from qvl_agent.tools import Tool

__version__ = "0.1.0"

MAX_EXPRESSION_LENGTH = 500
MAX_EXPONENT = 1000
MAX_RESULT_DIGITS = 400
MAX_FACTORIAL = 200

Number = int | float


class CalculatorError(ValueError):
    """The expression is not allowed or cannot be computed; the message says why."""


_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def _factorial(n: Number) -> int:
    if isinstance(n, float) and not n.is_integer():
        raise CalculatorError("factorial needs a whole number")
    n = int(n)
    if n < 0 or n > MAX_FACTORIAL:
        raise CalculatorError(f"factorial is limited to 0..{MAX_FACTORIAL}, got {n}")
    return math.factorial(n)


FUNCTIONS: dict[str, Callable[..., Number]] = {
    "abs": abs,
    "round": round,
    "min": min,
    "max": max,
    "sqrt": math.sqrt,
    "log": math.log,
    "log10": math.log10,
    "exp": math.exp,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "floor": math.floor,
    "ceil": math.ceil,
    "factorial": _factorial,
}
CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e}


def _check_size(value: Number) -> Number:
    if isinstance(value, int) and abs(value) >= 10**MAX_RESULT_DIGITS:
        raise CalculatorError(f"result has more than {MAX_RESULT_DIGITS} digits")
    if isinstance(value, float) and not math.isfinite(value):
        raise CalculatorError("result is not a finite number")
    return value


def _eval(node: ast.AST) -> Number:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise CalculatorError(f"only numbers are allowed, got {node.value!r}")
        return node.value
    if isinstance(node, ast.Name):
        if node.id in CONSTANTS:
            return CONSTANTS[node.id]
        raise CalculatorError(f"unknown name {node.id!r}; constants: {', '.join(CONSTANTS)}")
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise CalculatorError(f"exponent {right} is too large (limit {MAX_EXPONENT})")
        if isinstance(node.op, ast.Pow) and isinstance(left, int) and isinstance(right, int) and right > 0:
            # bound the size before computing: digits ~ right * log10(|left|)
            if abs(left) > 1 and right * math.log10(abs(left)) >= MAX_RESULT_DIGITS:
                raise CalculatorError(
                    f"result of {left}**{right} would have more than {MAX_RESULT_DIGITS} digits"
                )
        try:
            return _check_size(_BINARY[type(node.op)](left, right))
        except ZeroDivisionError:
            raise CalculatorError("division by zero") from None
        except OverflowError:
            raise CalculatorError("result is too large") from None
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
        func = FUNCTIONS.get(node.func.id)
        if func is None:
            raise CalculatorError(f"unknown function {node.func.id!r}; available: {', '.join(FUNCTIONS)}")
        args = [_eval(arg) for arg in node.args]
        try:
            return _check_size(func(*args))
        except CalculatorError:
            raise
        except (TypeError, ValueError, OverflowError) as exc:
            raise CalculatorError(f"{node.func.id}: {exc}") from None
    raise CalculatorError(f"unsupported syntax: {type(node).__name__}")


def evaluate(expression: str) -> Number:
    """Evaluate an arithmetic expression safely (numbers, + - * / // % **, parentheses, math functions)."""
    if not isinstance(expression, str) or not expression.strip():
        raise CalculatorError("the expression is empty")
    if len(expression) > MAX_EXPRESSION_LENGTH:
        raise CalculatorError(f"the expression is longer than {MAX_EXPRESSION_LENGTH} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise CalculatorError(f"cannot parse {expression!r}: {exc.msg}") from None
    result = _eval(tree)
    if isinstance(result, float) and result.is_integer() and abs(result) < 2**53:
        return int(result)
    return result


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression such as "(3 + 4) * 2" or "sqrt(16) + 2**3" and return the result.

    :param expression: the arithmetic expression to compute
    """
    return str(evaluate(expression))


@hookimpl
def register_tools(register: Callable[[Tool], None]) -> None:
    register(Tool.from_function(calculator))
