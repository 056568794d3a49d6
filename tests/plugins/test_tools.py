"""Tool: schemas from functions and pydantic models, validation, and failures turned into observations."""

from __future__ import annotations

import asyncio
import time
from typing import Literal

import pytest
from PIL import Image
from pydantic import BaseModel, Field

from qvl_agent.tools import Tool, ToolResult


def area(width: int, height: int = 1, unit: Literal["px", "cm"] = "px") -> str:
    """Area of a rectangle.

    Longer explanation that is not part of the summary.

    :param width: the width
    :param height: the height
    """
    return f"{width * height} {unit}^2"


def test_schema_from_typed_function():
    tool = Tool.from_function(area)
    assert tool.name == "area" and tool.description == "Area of a rectangle."
    assert tool.parameters["required"] == ["width"]
    props = tool.parameters["properties"]
    assert props["width"] == {"type": "integer", "description": "the width"}
    assert props["height"]["default"] == 1
    assert props["unit"]["enum"] == ["px", "cm"]
    spec = tool.spec()
    assert (spec.name, spec.description, spec.parameters) == ("area", tool.description, tool.parameters)


def test_google_style_docstring():
    def scale(factor: float) -> float:
        """Scale things.

        Args:
            factor (float): how much
        """
        return factor

    assert Tool.from_function(scale).parameters["properties"]["factor"]["description"] == "how much"


def test_valid_call_from_json_string_and_dict():
    tool = Tool.from_function(area)
    assert tool.run('{"width": 3, "height": 2}') == ToolResult(content="6 px^2")
    assert tool.run({"width": 4, "unit": "cm"}).content == "4 cm^2"


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ('{"height": 2}', "'width' is a required property"),
        ('{"width": "wide"}', "width: 'wide' is not of type 'integer'"),
        ('{"width": 1, "unit": "km"}', "unit: 'km' is not one of"),
        ("{width: 1}", "is not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
    ],
)
def test_bad_arguments_become_error_observations(arguments, expected):
    called = []
    tool = Tool("area", "Area.", Tool.from_function(area).parameters, lambda **kw: called.append(kw))
    result = tool.run(arguments)
    assert result.is_error and expected in result.content
    assert "Expected parameters" in result.content or "JSON object with parameters" in result.content
    assert called == []


def test_bare_string_for_single_string_parameter():
    def search(query: str) -> str:
        """Search."""
        return f"results for {query}"

    assert Tool.from_function(search).run("cute cats").content == "results for cute cats"
    assert Tool.from_function(search).run('```json\n{"query": "dogs"}\n```').content == "results for dogs"


def test_tool_exception_becomes_observation():
    def broken(x: int) -> int:
        """Always fails."""
        raise RuntimeError("disk on fire")

    result = Tool.from_function(broken).run({"x": 1})
    assert result.is_error and result.content == "Error: broken failed: RuntimeError: disk on fire"


def test_sync_timeout():
    def slow() -> str:
        """Slow."""
        time.sleep(2)
        return "late"

    start = time.monotonic()
    result = Tool.from_function(slow, timeout=0.1).run("{}")
    assert result.is_error and "did not finish within 0.1 seconds" in result.content
    assert time.monotonic() - start < 1.5


def test_async_tools_run_and_time_out():
    async def echo(text: str) -> str:
        """Echo."""
        await asyncio.sleep(0)
        return text.upper()

    async def hang() -> str:
        """Hang."""
        await asyncio.sleep(5)
        return "never"

    assert Tool.from_function(echo).run({"text": "hi"}).content == "HI"
    assert asyncio.run(Tool.from_function(echo).arun('{"text": "yo"}')).content == "YO"
    result = asyncio.run(Tool.from_function(hang, timeout=0.05).arun({}))
    assert result.is_error and "did not finish" in result.content
    assert asyncio.run(Tool.from_function(area).arun({"width": 2})).content == "2 px^2"
    assert asyncio.run(Tool.from_function(area).arun({"width": "x"})).is_error


def test_return_values_are_converted():
    image = Image.new("RGB", (3, 2))

    def many() -> list:
        """Text and a picture."""
        return ["crop:", image]

    result = Tool.from_function(many).run({})
    assert result.images == [image] and result.content == "crop:\n[image 3x2]"
    data = Tool("d", "", {"type": "object"}, lambda: {"a": [1, 2]}).run({})
    assert data.content == '{"a": [1, 2]}' and data.data == {"a": [1, 2]} and not data.is_error
    assert Tool("n", "", {"type": "object"}, lambda: None).run({}).content == ""
    custom = ToolResult(content="x", data=1)
    assert Tool("c", "", {"type": "object"}, lambda: custom).run({}) is custom


class Query(BaseModel):
    sql: str = Field(description="a SELECT statement")
    limit: int = Field(10, ge=1, le=100)


def test_from_pydantic_model():
    tool = Tool.from_model("query", "Run a query.", Query, lambda q: f"{q.sql} LIMIT {q.limit}")
    assert tool.parameters["properties"]["limit"]["maximum"] == 100
    assert tool.run({"sql": "SELECT 1"}).content == "SELECT 1 LIMIT 10"
    result = tool.run({"sql": "SELECT 1", "limit": 1000})
    assert result.is_error and "limit" in result.content


def test_invalid_tool_definitions_are_rejected():
    with pytest.raises(ValueError, match="invalid tool name"):
        Tool("has space", "", {"type": "object"}, print)
    with pytest.raises(TypeError, match="must be callable"):
        Tool("x", "", {"type": "object"}, "not callable")
    with pytest.raises(ValueError, match="not a valid JSON Schema"):
        Tool("x", "", {"type": 12}, print)
