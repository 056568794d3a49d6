"""The ReAct text functions reproduce the original Qwen-VL openai_api.py vectors exactly."""

from __future__ import annotations

import json

import pytest

from qvl_agent.model.errors import InputError
from qvl_agent.prompting import react

pytestmark = pytest.mark.testdata


@pytest.fixture(scope="module")
def vectors(qwen_vl_testdata):
    return json.loads((qwen_vl_testdata / "react_vectors.json").read_text())


def test_templates(vectors):
    assert react.TOOL_DESC == vectors["templates"]["TOOL_DESC"]
    assert react.REACT_INSTRUCTION == vectors["templates"]["REACT_INSTRUCTION"]


def test_parse_messages(vectors):
    cases = [c for c in vectors["parse_messages"] if "exception" not in c]
    assert len(cases) == 10
    for case in cases:
        query, history = react.parse_messages(case["messages"], case["functions"])
        expected_query = None if case["query"] == vectors["text_completion_sentinel"] else case["query"]
        assert query == expected_query, case["name"]
        assert [list(turn) for turn in history] == case["history"], case["name"]


def test_parse_messages_errors_carry_status_and_detail(vectors):
    cases = [c for c in vectors["parse_messages"] if "exception" in c]
    assert len(cases) == 3
    for case in cases:
        with pytest.raises(react.ReactFormatError) as info:
            react.parse_messages(case["messages"], case["functions"])
        assert info.value.status_code == case["exception"]["status_code"]
        assert info.value.detail == case["exception"]["detail"]
        assert str(info.value) == case["exception"]["detail"]
        assert isinstance(info.value, InputError) and isinstance(info.value, ValueError)


def test_parse_response(vectors):
    assert len(vectors["parse_response"]) == 15
    for case in vectors["parse_response"]:
        parsed = react.parse_response(case["response"])
        message = case["choice"]["message"]
        assert parsed["content"] == message["content"], case["response"]
        assert parsed["function_call"] == message["function_call"], case["response"]
        assert parsed["finish_reason"] == case["choice"]["finish_reason"], case["response"]


def test_stop_words(vectors):
    for case in vectors["stop_words"]:
        assert react.stop_words(case["request_stop"], case["has_functions"]) == case["stop_words"], case


def test_trim_stop_words(vectors):
    for case in vectors["trim_stop_words"]:
        assert react.trim_stop_words(case["response"], case["stop_words"]) == case["result"], case


def test_other_malformed_conversations_raise_clear_errors():
    with pytest.raises(react.ReactFormatError, match="Incorrect role system"):
        react.parse_messages([{"role": "user", "content": "a"}, {"role": "system", "content": "b"}])
    with pytest.raises(react.ReactFormatError) as info:
        react.parse_messages([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
    assert info.value.status_code == 400


def test_stop_words_ids_with_the_real_tokenizer(vectors, qwen_vl_testdata):
    from qvl_agent.model.tokenization_qwen import QWenTokenizer

    tokenizer = QWenTokenizer(str(qwen_vl_testdata / "qwen.tiktoken"))
    for case in vectors["stop_words"]:
        words = react.stop_words(case["request_stop"], case["has_functions"])
        assert react.stop_words_ids(words, tokenizer) == case["stop_words_ids"], case
