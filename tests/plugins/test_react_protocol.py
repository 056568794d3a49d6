"""The built-in "react" protocol: messages with pictures and tools-style calls → request; replies → ParsedReply."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from qvl_agent.messages import FunctionSpec, ImagePart, Message, ParsedReply, TextPart, ToolCall
from qvl_agent.plugins.react import ReactProtocol
from qvl_agent.prompting import react

WEATHER = {
    "name": "get_current_weather",
    "description": "Get the current weather in a given location.",
    "parameters": {
        "type": "object",
        "properties": {"location": {"type": "string"}},
        "required": ["location"],
    },
}


def picture(color: str, size=(8, 6)) -> Image.Image:
    return Image.new("RGB", size, color)


def test_registered_through_the_hook(pm):
    from qvl_agent import plugins

    protocol = plugins.get_protocol("react")
    assert isinstance(protocol, ReactProtocol)
    with pytest.raises(ValueError, match="unknown function-calling protocol 'nope'.*react"):
        plugins.get_protocol("nope")


def test_build_request_numbers_pictures_across_the_conversation():
    red, green, blue = picture("red"), picture("green"), picture("blue")
    messages = [
        Message(
            role="user", content=[ImagePart(image=red), ImagePart(image=green), TextPart(text="Compare.")]
        ),
        Message(role="assistant", content="They differ."),
        Message(role="user", content=[TextPart(text="And this?"), ImagePart(image=blue)]),
    ]
    request = ReactProtocol().build_request(messages)
    assert request.history == [
        ("Picture 1: <img>image-1</img>\nPicture 2: <img>image-2</img>\nCompare.", "They differ.")
    ]
    assert request.query == "And this?Picture 3: <img>image-3</img>"
    assert request.images == [red, green, blue]
    assert request.stop == []
    assert request.system == "You are a helpful assistant."


def test_build_request_with_functions_matches_the_text_functions():
    messages = [Message(role="system", content="Be brief."), Message(role="user", content="Weather in Oslo?")]
    request = ReactProtocol().build_request(messages, [FunctionSpec.from_any(WEATHER)])
    query, history = react.parse_messages(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Oslo?"}],
        [WEATHER],
    )
    assert request.query == query and request.history == history
    assert request.query.startswith("Be brief.\n\nAnswer the following questions")
    assert request.query.endswith("Question: Weather in Oslo?")
    assert request.stop == ["Observation:"]


def test_tools_style_messages_map_to_function_results():
    legacy = [
        Message(role="user", content="A and B?"),
        Message(
            role="assistant", function_call={"name": "get_current_weather", "arguments": '{"location": "A"}'}
        ),
        Message(role="function", name="get_current_weather", content="A: sunny"),
        Message(
            role="assistant", function_call={"name": "get_current_weather", "arguments": '{"location": "B"}'}
        ),
        Message(role="function", name="get_current_weather", content="B: snow"),
    ]
    calls = [
        ToolCall(id="c1", function={"name": "get_current_weather", "arguments": '{"location": "A"}'}),
        ToolCall(id="c2", function={"name": "get_current_weather", "arguments": '{"location": "B"}'}),
    ]
    tools_style = [
        Message(role="user", content="A and B?"),
        Message(role="assistant", tool_calls=calls),
        Message(role="tool", tool_call_id="c1", content="A: sunny"),
        Message(role="tool", tool_call_id="c2", content="B: snow"),
    ]
    protocol = ReactProtocol()
    expected = protocol.build_request(legacy, [WEATHER])
    got = protocol.build_request(tools_style, [WEATHER])
    assert got.query is None  # completion mode: the model continues after "Thought:"
    assert (got.query, got.history) == (expected.query, expected.history)
    assert got.history[0][1].endswith("Observation: B: snow\nThought:")


def test_tool_returned_picture_becomes_the_next_picture():
    first, crop = picture("red"), picture("white", (4, 4))
    messages = [
        Message(role="user", content=[ImagePart(image=first), TextPart(text="zoom in")]),
        Message(role="assistant", function_call={"name": "zoom", "arguments": "{}"}),
        Message(role="function", content=[ImagePart(image=crop), TextPart(text="[image 4x4]")]),
    ]
    request = ReactProtocol().build_request(messages, [{"name": "zoom", "parameters": {}}])
    assert request.images == [first, crop]
    assert "Observation: Picture 2: <img>image-2</img>\n[image 4x4]\nThought:" in request.history[0][1]


def test_unresolved_image_is_fetched_through_the_plugins(pm, tmp_path):
    path = tmp_path / "p.png"
    picture("red", (5, 7)).save(path)
    request = ReactProtocol().build_request(
        [Message(role="user", content=[ImagePart(url=str(path)), TextPart(text="?")])]
    )
    assert len(request.images) == 1 and request.images[0].size == (5, 7)


def test_malformed_conversations_raise_value_errors():
    protocol = ReactProtocol()
    with pytest.raises(ValueError, match="Expecting at least one user message"):
        protocol.build_request([])
    with pytest.raises(ValueError, match="Expecting role assistant before role function"):
        protocol.build_request([Message(role="user", content="q"), Message(role="tool", content="r")])


def test_function_spec_from_any_accepts_every_shape():
    qwen = {
        "name_for_human": "谷歌搜索",
        "name_for_model": "google_search",
        "description_for_model": "Search the web.",
        "parameters": [{"name": "q", "description": "query", "required": True, "schema": {"type": "string"}}],
    }
    spec = FunctionSpec.from_any(qwen)
    assert (spec.name, spec.name_for_human, spec.description) == (
        "google_search",
        "谷歌搜索",
        "Search the web.",
    )
    assert spec.json_schema() == {
        "type": "object",
        "properties": {"q": {"type": "string", "description": "query"}},
        "required": ["q"],
    }
    # the prompt renders the Qwen shape exactly as the original server did
    request = ReactProtocol().build_request([Message(role="user", content="hi")], [spec])
    query, _ = react.parse_messages([{"role": "user", "content": "hi"}], [qwen])
    assert request.query == query
    assert FunctionSpec.from_any({"type": "function", "function": WEATHER}).name == "get_current_weather"
    assert FunctionSpec.from_any(WEATHER).json_schema() == WEATHER["parameters"]
    with pytest.raises(ValueError, match="has no name"):
        FunctionSpec.from_any({"description": "x"})


@pytest.mark.parametrize(
    ("text", "name", "arguments", "content"),
    [
        ('Thought: look\nAction: zoom\nAction Input: {"box": [1, 2]}', "zoom", '{"box": [1, 2]}', None),
        ("Thought: look\nAction: zoom", None, None, "Thought: look\nAction: zoom"),  # no Action Input
        ("Thought: x\nAction: zoom\nAction Input: {not json", "zoom", "{not json", None),  # invalid JSON kept
        ("Thought: x\nAction: no_such_tool\nAction Input: {}", "no_such_tool", "{}", None),  # unknown tool
        (
            "Thought: x\nAction: \nAction Input: {}",
            None,
            None,
            "Thought: x\nAction: \nAction Input: {}\nObservation:",
        ),
        ("Thought: done\nFinal Answer: 42", None, None, "42"),
    ],
)
def test_parse_reply_handles_malformed_output(text, name, arguments, content):
    reply = ReactProtocol().parse_reply(text, [FunctionSpec.from_any(WEATHER)])
    if name is None:
        assert reply.function_call is None and reply.content == content
    else:
        assert reply.function_call.name == name and reply.function_call.arguments == arguments
        assert reply.thought == text.split("\n")[0].removeprefix("Thought: ")


_FRAGMENTS = st.sampled_from(
    [
        "\nAction:",
        "\nAction Input:",
        "\nObservation:",
        "\nFinal Answer: ",
        "Thought:",
        " zoom",
        "{",
        "}",
        "\n",
        " ",
    ]
)
_TEXT = st.lists(st.one_of(_FRAGMENTS, st.text(max_size=12)), max_size=14).map("".join)


@settings(max_examples=300, deadline=None)
@given(_TEXT)
def test_parse_reply_never_raises(text):
    reply = ReactProtocol().parse_reply(text)
    assert isinstance(reply, ParsedReply)
    if reply.function_call is not None:
        assert reply.function_call.name and reply.function_call.name == reply.function_call.name.strip()
        assert text.startswith(reply.content)
    else:
        assert reply.content is not None


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "role": st.sampled_from(["system", "user", "assistant", "function"]),
                "content": st.text(max_size=8),
            }
        ),
        max_size=6,
    ),
    st.booleans(),
)
def test_parse_messages_raises_only_clear_errors(messages, with_functions):
    try:
        query, history = react.parse_messages(messages, [WEATHER] if with_functions else None)
    except react.ReactFormatError as exc:
        assert exc.status_code == 400 and exc.detail.startswith("Invalid request")
    else:
        assert query is None or isinstance(query, str)
        assert all(isinstance(q, str) and isinstance(a, str) for q, a in history)


def test_json_arguments_round_trip():
    args = json.dumps({"location": "Zürich"}, ensure_ascii=False)
    reply = ReactProtocol().parse_reply(
        f"Thought: t\nAction: get_current_weather\nAction Input: {args}\nObservation:"
    )
    assert json.loads(reply.function_call.arguments) == {"location": "Zürich"}
