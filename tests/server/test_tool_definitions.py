"""Function / tool definitions are checked like OpenAI does: a bad name or a bad JSON Schema is a 400."""

from __future__ import annotations

import openai
import pytest

USER = [{"role": "user", "content": "hi"}]


def _tool(name: str, parameters: dict) -> dict:
    return {"type": "function", "function": {"name": name, "description": "d", "parameters": parameters}}


@pytest.mark.parametrize(
    ("tools", "fragment"),
    [
        ([_tool("f g h", {"type": "object"})], "must be 1-64 letters"),
        ([_tool("x" * 65, {"type": "object"})], "must be 1-64 letters"),
        ([_tool("ok", {"type": "objectx"})], "not a valid JSON Schema"),
        ([_tool("ok", {"type": "object", "required": "x"})], "not a valid JSON Schema"),
    ],
)
def test_bad_tool_definitions_are_rejected(scripted_server, make_client, tools, fragment) -> None:
    server, backend = scripted_server("never used")
    client = make_client(server)
    with pytest.raises(openai.BadRequestError, match=fragment):
        client.chat.completions.create(model="scripted", messages=USER, tools=tools)
    assert backend.requests == []


def test_legacy_functions_are_checked_too(scripted_server, make_client) -> None:
    server, backend = scripted_server("never used")
    client = make_client(server)
    with pytest.raises(openai.BadRequestError, match="not a valid JSON Schema"):
        client.chat.completions.create(
            model="scripted", messages=USER, functions=[{"name": "ok", "parameters": {"type": 5}}]
        )
    assert backend.requests == []


def test_good_definitions_in_both_shapes_still_work(scripted_server, make_client) -> None:
    server, _ = scripted_server("Thought: done\nFinal Answer: fine")
    client = make_client(server)
    reply = client.chat.completions.create(
        model="scripted",
        messages=USER,
        tools=[_tool("get-weather_2", {"type": "object", "properties": {"city": {"type": "string"}}})],
    )
    assert reply.choices[0].message.content == "fine"
    reply = client.chat.completions.create(
        model="scripted",
        messages=USER,
        functions=[
            {
                "name_for_model": "image_gen",
                "name_for_human": "画图",
                "description_for_model": "d",
                "parameters": [{"name": "prompt", "type": "string", "required": True}],
            }
        ],
    )
    assert reply.choices[0].message.content == "fine"
