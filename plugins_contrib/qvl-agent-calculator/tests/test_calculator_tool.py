"""Tests of the calculator plugin: safe evaluation, limits, and the tool as the agent sees it."""

from __future__ import annotations

import json
import math
import re

import pytest
import qvl_agent_calculator as calc
from qvl_agent_calculator import CalculatorError, evaluate


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("7 / 2", 3.5),
        ("7 // 2", 3),
        ("-7 % 3", 2),
        ("2 ** 10", 1024),
        ("-(3 - 5)", 2),
        ("sqrt(16) + 2**3", 12),
        ("max(3, 9, 4) - min(3, 9, 4)", 6),
        ("round(2 * pi, 3)", 6.283),
        ("factorial(5)", 120),
        ("1.5 * 4", 6),
        ("log10(1000)", 3),
    ],
)
def test_evaluates_arithmetic(expression: str, expected: float) -> None:
    assert evaluate(expression) == expected


def test_float_results_stay_floats() -> None:
    assert math.isclose(evaluate("1 / 3"), 1 / 3)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("__import__('os').system('echo hi')", "unsupported syntax: Call"),
        ("__import__('os')", "unknown function '__import__'"),
        ("().__class__", "unsupported syntax"),
        ("open", "unknown name 'open'"),
        ("'a' * 3", "only numbers"),
        ("True + 1", "only numbers"),
        ("x = 3", "cannot parse"),
        ("[1, 2][0]", "unsupported syntax"),
        ("lambda: 1", "unsupported syntax"),
        ("1 / 0", "division by zero"),
        ("9 ** 9 ** 9", "too large"),
        ("10 ** 999", "digits"),
        ("factorial(10000)", "factorial is limited"),
        ("exp(1000)", "exp"),
        ("sqrt(-1)", "sqrt"),
        ("", "empty"),
        ("1 +", "cannot parse"),
        ("1" * 600, "longer than"),
        ("round(x=1)", "unsupported syntax"),
    ],
)
def test_refuses_unsafe_or_impossible_input(expression: str, message: str) -> None:
    with pytest.raises(CalculatorError, match=re.escape(message)):
        evaluate(expression)


def test_power_of_float_is_bounded() -> None:
    with pytest.raises(CalculatorError):
        evaluate("10.0 ** 400")


def test_tool_returns_result_and_errors_as_observations() -> None:
    from qvl_agent.tools import Tool

    tool = Tool.from_function(calc.calculator)
    assert tool.name == "calculator"
    assert tool.parameters["required"] == ["expression"]
    ok = tool.run(json.dumps({"expression": "3 * (2 + 5)"}))
    assert not ok.is_error and ok.content == "21"
    bad = tool.run({"expression": "open('/etc/passwd')"})
    assert bad.is_error and "unknown function 'open'" in bad.content
    missing = tool.run({})
    assert missing.is_error and "expression" in missing.content


def test_register_tools_hook_registers_the_calculator() -> None:
    registered = []
    calc.register_tools(registered.append)
    assert [t.name for t in registered] == ["calculator"]
    assert registered[0].run({"expression": "2**5"}).content == "32"
