"""Non-streaming chat completions against a real server, driven by the official openai client."""

from __future__ import annotations

import base64
import io
import json

import httpx
import openai
import pytest
from PIL import Image

from qvl_agent.messages import GenerationRequest

WEATHER = {
    "name": "get_weather",
    "description": "Get the current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
TOOLS = [{"type": "function", "function": WEATHER}]
CALL_REPLY = (
    'Thought: I need the weather.\nAction: get_weather\nAction Input: {"city": "Paris"}\nObservation:'
)


def png_data_url(size: tuple[int, int], color: str = "red") -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_models_health_and_openapi(scripted_server, make_client):
    server, _ = scripted_server("hi")
    client = make_client(server)
    assert [m.id for m in client.models.list().data] == ["scripted"]
    assert client.models.retrieve("scripted").id == "scripted"
    health = httpx.get(server.url + "/health").json()
    assert health["status"] == "ok" and health["active"] == 0 and health["model"] == "scripted"
    schema = httpx.get(server.url + "/openapi.json").json()
    assert "/v1/chat/completions" in schema["paths"] and "/v1/models" in schema["paths"]
    assert "ChatCompletionRequest" in schema["components"]["schemas"]
    assert "boxes" in schema["components"]["schemas"]["ResponseMessage"]["properties"]


def test_plain_chat(scripted_server, make_client):
    server, backend = scripted_server("Hello there, my friend.")
    reply = make_client(server).chat.completions.create(
        model="scripted",
        messages=[
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "hi"},
        ],
        temperature=0.2,
        top_p=0.9,
        seed=7,
        user="someone",
    )
    choice = reply.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "Hello there, my friend."
    assert choice.finish_reason == "stop"
    assert choice.message.function_call is None and choice.message.tool_calls is None
    assert (
        reply.object == "chat.completion" and reply.id.startswith("chatcmpl-") and reply.model == "scripted"
    )
    request = backend.requests[-1]
    assert request.query == "hi" and request.history == []
    assert (request.temperature, request.top_p, request.seed) == (0.2, 0.9, 7)
    # usage is what the backend's tokenizer counted
    assert reply.usage.prompt_tokens == backend.count_tokens("hi")
    assert reply.usage.completion_tokens == backend.count_tokens("Hello there, my friend.")
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_multi_turn_history_and_developer_role(scripted_server, make_client):
    server, backend = scripted_server("fine")
    make_client(server).chat.completions.create(
        model="scripted",
        messages=[
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "answer one"},
            {"role": "user", "content": [{"type": "text", "text": "second"}]},
        ],
    )
    request = backend.requests[-1]
    assert request.history == [("Be brief.\n\nQuestion: first", "answer one")]
    assert request.query == "second"


def test_image_by_data_url(scripted_server, make_client):
    server, backend = scripted_server("a red picture")
    reply = make_client(server).chat.completions.create(
        model="scripted",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": png_data_url((40, 30)), "detail": "low"}},
                    {"type": "text", "text": "What colour?"},
                ],
            }
        ],
    )
    assert reply.choices[0].message.content == "a red picture"
    request = backend.requests[-1]
    assert [im.size for im in request.images] == [(40, 30)]
    assert request.images[0].getpixel((0, 0)) == (255, 0, 0)
    assert request.query == "Picture 1: <img>image-1</img>\nWhat colour?"


def test_image_by_file_path_and_two_images(scripted_server, make_client, tmp_path):
    path = tmp_path / "blue.png"
    Image.new("RGB", (17, 23), "blue").save(path)
    server, backend = scripted_server("two pictures", allow_local_images=True, image_dirs=[str(tmp_path)])
    make_client(server).chat.completions.create(
        model="scripted",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": str(path)}},
                    {"type": "image_url", "image_url": {"url": png_data_url((40, 30))}},
                    {"type": "text", "text": "Compare them."},
                ],
            }
        ],
    )
    request = backend.requests[-1]
    assert [im.size for im in request.images] == [(17, 23), (40, 30)]
    assert request.images[0].getpixel((0, 0)) == (0, 0, 255)
    assert request.query.count("<img>") == 2 and "Picture 2: <img>image-2</img>" in request.query


def test_local_images_are_opt_in(scripted_server, make_client, tmp_path):
    path = tmp_path / "secret.png"
    Image.new("RGB", (8, 8)).save(path)
    server, backend = scripted_server("never")
    with pytest.raises(openai.BadRequestError, match="local image files are disabled"):
        make_client(server).chat.completions.create(
            model="scripted",
            messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": str(path)}}]}],
        )
    assert backend.requests == []


def test_image_outside_allowed_dirs_and_broken_data_url(scripted_server, make_client, tmp_path):
    (tmp_path / "ok").mkdir()
    outside = tmp_path / "outside.png"
    Image.new("RGB", (8, 8)).save(outside)
    server, _ = scripted_server("never", allow_local_images=True, image_dirs=[str(tmp_path / "ok")])
    client = make_client(server)
    for url in (str(outside), "data:image/png;base64,AAAA", "ftp://example.com/a.png"):
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(
                model="scripted",
                messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}],
            )
        assert info.value.body["param"].startswith("messages[0]")


def test_functions_give_function_call(scripted_server, make_client):
    server, backend = scripted_server(CALL_REPLY)
    reply = make_client(server).chat.completions.create(
        model="scripted", messages=[{"role": "user", "content": "Weather in Paris?"}], functions=[WEATHER]
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "function_call"
    assert choice.message.function_call.name == "get_weather"
    assert json.loads(choice.message.function_call.arguments) == {"city": "Paris"}
    assert choice.message.tool_calls is None
    assert choice.message.content == "Thought: I need the weather."
    request = backend.requests[-1]
    assert "get_weather: Call this tool to interact with the get_weather API." in request.query
    assert "Observation:" in request.stop


def test_tools_round_trip(scripted_server, make_client):
    server, backend = scripted_server(
        [CALL_REPLY, "Thought: I now know the final answer\nFinal Answer: It is sunny."]
    )
    client = make_client(server)
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    first = client.chat.completions.create(model="scripted", messages=messages, tools=TOOLS)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.function_call is None
    (call,) = choice.message.tool_calls
    assert call.id.startswith("call_") and call.type == "function"
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}

    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 24 C"},
    ]
    second = client.chat.completions.create(model="scripted", messages=messages, tools=TOOLS)
    assert second.choices[0].message.content == "It is sunny."
    assert second.choices[0].finish_reason == "stop" and second.choices[0].message.tool_calls is None
    # the tool result reached the model as a ReAct observation, in completion mode
    request = backend.requests[-1]
    assert request.query is None
    assert request.history[-1][1].endswith(
        'Action: get_weather\nAction Input: {"city": "Paris"}\nObservation: sunny, 24 C\nThought:'
    )


def test_two_tool_calls_in_one_turn_are_replayed_in_order(scripted_server, make_client):
    server, backend = scripted_server("Final Answer: done")
    calls = [
        {
            "id": "call_a",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "A"}'},
        },
        {
            "id": "call_b",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "B"}'},
        },
    ]
    make_client(server).chat.completions.create(
        model="scripted",
        tools=TOOLS,
        messages=[
            {"role": "user", "content": "A and B?"},
            {"role": "assistant", "content": None, "tool_calls": calls},
            {"role": "tool", "tool_call_id": "call_b", "content": "rain"},
            {"role": "tool", "tool_call_id": "call_a", "content": "sun"},
        ],
    )
    turn = backend.requests[-1].history[-1][1]
    assert turn.index('{"city": "A"}\nObservation: sun') < turn.index('{"city": "B"}\nObservation: rain')


def test_tool_message_with_unknown_id_is_rejected(scripted_server, make_client):
    server, _ = scripted_server("never")
    with pytest.raises(openai.BadRequestError, match="does not match any call"):
        make_client(server).chat.completions.create(
            model="scripted",
            tools=TOOLS,
            messages=[
                {"role": "user", "content": "x"},
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": "{}"},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "zzz", "content": "?"},
            ],
        )


def test_tool_choice_none_offers_no_tools(scripted_server, make_client):
    server, backend = scripted_server(CALL_REPLY)
    reply = make_client(server).chat.completions.create(
        model="scripted", messages=[{"role": "user", "content": "hi"}], tools=TOOLS, tool_choice="none"
    )
    assert reply.choices[0].message.tool_calls is None and reply.choices[0].finish_reason == "stop"
    assert reply.choices[0].message.content == CALL_REPLY  # not parsed, and no "Observation:" stop
    assert "Answer the following questions" not in backend.requests[-1].query


def test_tool_choice_required_forces_a_call(scripted_server, make_client):
    seen: list[GenerationRequest] = []

    def reply(request: GenerationRequest) -> str:
        seen.append(request)
        return ' get_weather\nAction Input: {"city": "Oslo"}'

    server, _ = scripted_server(reply)
    result = make_client(server).chat.completions.create(
        model="scripted", messages=[{"role": "user", "content": "hi"}], tools=TOOLS, tool_choice="required"
    )
    (call,) = result.choices[0].message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Oslo"}
    assert result.choices[0].finish_reason == "tool_calls"
    # the model was left to continue an assistant turn that already says "Action:"
    assert seen[0].query is None and seen[0].history[-1][1].endswith("\nAction:")


def test_tool_choice_named_offers_and_forces_that_tool(scripted_server, make_client):
    other = {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "Time.",
            "parameters": {"type": "object", "properties": {}},
        },
    }
    server, backend = scripted_server(' {"city": "Rome"}')
    result = make_client(server).chat.completions.create(
        model="scripted",
        messages=[{"role": "user", "content": "hi"}],
        tools=[other, *TOOLS],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        parallel_tool_calls=False,
    )
    (call,) = result.choices[0].message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Rome"}
    history = backend.requests[-1].history
    assert "get_time" not in history[-1][0] and history[-1][1].endswith("Action: get_weather\nAction Input:")


def test_named_function_call_legacy(scripted_server, make_client):
    server, _ = scripted_server(' {"city": "Lima"}')
    result = make_client(server).chat.completions.create(
        model="scripted",
        messages=[{"role": "user", "content": "hi"}],
        functions=[WEATHER],
        function_call={"name": "get_weather"},
    )
    assert result.choices[0].finish_reason == "function_call"
    assert result.choices[0].message.function_call.name == "get_weather"


def test_unknown_forced_tool_is_a_400(scripted_server, make_client):
    server, _ = scripted_server("never")
    with pytest.raises(openai.BadRequestError) as info:
        make_client(server).chat.completions.create(
            model="scripted",
            messages=[{"role": "user", "content": "hi"}],
            tools=TOOLS,
            tool_choice={"type": "function", "function": {"name": "nope"}},
        )
    assert info.value.body["param"] == "tool_choice"


def test_original_qwen_function_shape_and_react_vectors(scripted_server, make_client, qwen_vl_testdata):
    """Conversations of the original server's vectors reach the model exactly as the original rendered them."""
    vectors = json.loads((qwen_vl_testdata / "react_vectors.json").read_text())
    sentinel = vectors["text_completion_sentinel"]
    server, backend = scripted_server("ok")
    client = make_client(server)
    for case in vectors["parse_messages"]:
        kwargs = {"functions": case["functions"]} if case.get("functions") else {}
        if "exception" in case:
            with pytest.raises(openai.BadRequestError) as info:
                client.chat.completions.create(model="scripted", messages=case["messages"], **kwargs)
            assert info.value.body["message"] == case["exception"]["detail"], case["name"]
            continue
        client.chat.completions.create(model="scripted", messages=case["messages"], **kwargs)
        request = backend.requests[-1]
        expected_query = None if case["query"] == sentinel else case["query"]
        assert request.query == expected_query, case["name"]
        assert [list(turn) for turn in request.history] == case["history"], case["name"]


def test_max_tokens_gives_length_and_stop_words_reach_the_model(scripted_server, make_client):
    server, backend = scripted_server("one two three four five six")
    client = make_client(server)
    reply = client.chat.completions.create(
        model="scripted", messages=[{"role": "user", "content": "count"}], max_tokens=3
    )
    assert reply.choices[0].finish_reason == "length"
    assert reply.choices[0].message.content == "one two three"
    assert reply.usage.completion_tokens == 3
    reply = client.chat.completions.create(
        model="scripted",
        messages=[{"role": "user", "content": "count"}],
        max_completion_tokens=10,
        stop=["\n\nfive", " six"],
    )
    # as the original server: each stop is also used without its leading newlines
    assert backend.requests[-1].stop == ["\n\nfive", " six", "five"]
    assert reply.choices[0].message.content == "one two three four "
    assert backend.requests[-1].max_new_tokens == 10


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
        ({"temperature": 3}, "temperature"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"tool_choice": "required"}, "tool_choice"),
    ],
)
def test_values_that_cannot_be_honoured_are_400(scripted_server, make_client, kwargs, param):
    server, backend = scripted_server("never")
    with pytest.raises(openai.BadRequestError) as info:
        make_client(server).chat.completions.create(
            model="scripted", messages=[{"role": "user", "content": "x"}], **kwargs
        )
    assert info.value.status_code == 400
    assert info.value.body["param"] == param
    assert set(info.value.body) == {"message", "type", "param", "code"}
    assert backend.requests == []


def test_n_equal_one_is_fine(scripted_server, make_client):
    server, _ = scripted_server("ok")
    reply = make_client(server).chat.completions.create(
        model="scripted", messages=[{"role": "user", "content": "x"}], n=1
    )
    assert len(reply.choices) == 1


def test_grounding_boxes_extension(scripted_server, make_client):
    server, _ = scripted_server(["<ref>the square</ref><box>(100,200),(500,600)</box>", "no box here"])
    reply = make_client(server).chat.completions.create(
        model="scripted",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": png_data_url((200, 100))}},
                    {"type": "text", "text": "Where is the square?"},
                ],
            }
        ],
    )
    message = reply.choices[0].message
    assert message.content == "<ref>the square</ref><box>(100,200),(500,600)</box>"
    (box,) = message.model_extra["boxes"]
    assert box["label"] == "the square" and box["norm"] == [100, 200, 500, 600]
    assert box["image_index"] == 0
    assert box["pixels"] == pytest.approx([20.0, 20.0, 100.0, 60.0])
    plain = make_client(server).chat.completions.create(
        model="scripted", messages=[{"role": "user", "content": "x"}]
    )
    assert "boxes" not in (plain.choices[0].message.model_extra or {})
