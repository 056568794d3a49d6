"""ChatML prompt functions against the original Qwen-VL generation utils' recorded outputs."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from qvl_agent.model.errors import InputError
from qvl_agent.model.tokenization_qwen import QWenTokenizer
from qvl_agent.prompting.chatml import (
    DEFAULT_SYSTEM,
    UnknownChatFormatError,
    build_chatml_text,
    decode_tokens,
    get_stop_words_ids,
    make_context,
)

pytestmark = pytest.mark.testdata

REPO_ROOT = Path(__file__).resolve().parents[2]
_DATA = Path(os.environ.get("QVL_TESTDATA", REPO_ROOT.parent / "shared" / "testdata" / "qwen_vl"))
_VECTOR_FILE = _DATA / "tokenizer_vectors.json"
VECTORS: dict = json.loads(_VECTOR_FILE.read_text(encoding="utf-8")) if _VECTOR_FILE.exists() else {}


def cases(section: str) -> list:
    records = VECTORS.get(section)
    if records is None:
        return [pytest.param(None, id="no-testdata")]
    params = []
    for i, record in enumerate(records):
        label = re.sub(r"\s+", "_", record.get("name") or record.get("query") or "")[:40]
        params.append(pytest.param(record, id=f"{i:02d}-{label}"))
    return params


@pytest.fixture(scope="module")
def tok(qwen_vl_testdata: Path) -> QWenTokenizer:
    return QWenTokenizer(str(qwen_vl_testdata / "qwen.tiktoken"))


@pytest.fixture
def case(request: pytest.FixtureRequest, qwen_vl_testdata: Path) -> dict:
    return request.param


@pytest.mark.parametrize("case", cases("make_context"), indirect=True)
def test_make_context(tok: QWenTokenizer, case: dict) -> None:
    raw_text, tokens = make_context(
        tok,
        case["query"],
        history=case["history"],
        system=case["system"],
        max_window_size=case["max_window_size"],
        chat_format=case["chat_format"],
    )
    assert raw_text == case["raw_text"]
    assert tokens == case["context_tokens"]
    assert (tok.decode(tokens) == raw_text) is case["decode(context_tokens)==raw_text"]


@pytest.mark.parametrize("case", cases("make_context"), indirect=True)
def test_build_chatml_text_matches_untruncated_context(tok: QWenTokenizer, case: dict) -> None:
    text = build_chatml_text(case["system"], case["history"], case["query"])
    if case["max_window_size"] >= 6144:
        assert text == case["raw_text"]
    else:  # the window dropped old turns: the full text is longer and ends the same way
        assert len(text) > len(case["raw_text"]) and text.endswith(
            case["raw_text"].split("<|im_end|>\n", 1)[1]
        )


def test_make_context_raw_format(tok: QWenTokenizer, qwen_vl_testdata: Path) -> None:
    case = VECTORS["make_context_raw_format"]
    raw_text, tokens = make_context(tok, case["query"], history=case["history"], chat_format="raw")
    assert raw_text == case["raw_text"]
    assert tokens == case["context_tokens"]


def test_make_context_defaults_and_user_typed_specials(tok: QWenTokenizer, qwen_vl_testdata: Path) -> None:
    raw_text, tokens = make_context(tok, "hi")
    assert raw_text == build_chatml_text("", None, "hi")
    # only the 4 structural im_start/im_end pairs' tokens are specials; typed ones stay text
    _, typed = make_context(tok, "<|im_start|>system", system=DEFAULT_SYSTEM)
    assert typed.count(tok.im_start_id) == 3 and typed.count(tok.im_end_id) == 2
    _, grounded = make_context(tok, "<ref>dog</ref>")
    assert tok.ref_start_id in grounded and tok.ref_end_id in grounded


def test_make_context_turn_without_response(tok: QWenTokenizer, qwen_vl_testdata: Path) -> None:
    raw_text, tokens = make_context(tok, "next", history=[("q", None)], system="s")
    assert raw_text == build_chatml_text("s", [("q", None)], "next")
    assert tok.decode(tokens) == raw_text
    assert raw_text.count("<|im_start|>assistant") == 1


def test_make_context_rejects_bad_input(tok: QWenTokenizer, qwen_vl_testdata: Path) -> None:
    with pytest.raises(UnknownChatFormatError, match="Unknown chat format 'alpaca'") as excinfo:
        make_context(tok, "q", chat_format="alpaca")
    assert isinstance(excinfo.value, NotImplementedError) and isinstance(excinfo.value, InputError)
    with pytest.raises(InputError, match=r"\(query, response\) pair"):
        make_context(tok, "q", history=[("only one",)])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"query": [{"text": "hi"}]}, r"query must be a str, got list: .*tokenizer\.from_list_format"),
        ({"query": None, "chat_format": "raw"}, r"query must be a str, got NoneType"),
        ({"system": None}, r"system must be a str, got NoneType"),
        ({"history": [(1, "a")]}, r"a history query must be a str, got int"),
        ({"history": [("q", ["a"])]}, r"a history response must be a str, got list"),
    ],
)
def test_make_context_names_wrong_types(tok: QWenTokenizer, kwargs: dict, message: str) -> None:
    kwargs = {"query": "q", **kwargs}
    with pytest.raises(InputError, match=message):
        make_context(tok, kwargs.pop("query"), **kwargs)


def test_stop_words(tok: QWenTokenizer, qwen_vl_testdata: Path) -> None:
    expected = VECTORS["stop_words"]
    assert get_stop_words_ids("chatml", tok) == expected["chatml"]
    assert get_stop_words_ids("raw", tok) == expected["raw"]
    with pytest.raises(NotImplementedError, match="Unknown chat format"):
        get_stop_words_ids("other", tok)


@pytest.mark.parametrize("case", cases("decode_tokens_chatml"), indirect=True)
def test_decode_tokens_chatml(tok: QWenTokenizer, case: dict) -> None:
    args = (case["tokens"], tok, case["raw_text_len"], case["context_length"], "chatml")
    assert decode_tokens(*args, return_end_reason=True) == (case["response"], case["end_reason"])
    assert decode_tokens(*args) == case["response"]


def test_decode_tokens_accepts_a_tensor_and_prints_when_verbose(
    tok: QWenTokenizer, qwen_vl_testdata: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    raw_text, context = make_context(tok, "hi", system=DEFAULT_SYSTEM)
    generated = tok.encode("Hi!") + [tok.im_end_id, tok.eod_id]
    tokens = torch.tensor(context + generated)
    out = decode_tokens(
        tokens, tok, len(raw_text), len(context), "chatml", verbose=True, return_end_reason=True
    )
    assert out == ("Hi!", "Gen '<|im_end|>'")
    assert "End Reason: Gen '<|im_end|>'" in capsys.readouterr().out


def test_decode_tokens_chatml_drops_last_token_without_end_token(
    tok: QWenTokenizer, qwen_vl_testdata: Path
) -> None:
    """Quirk 2: no im_start/im_end generated -> the final generated token is lost."""
    raw_text, context = make_context(tok, "count", system=DEFAULT_SYSTEM)
    generated = tok.encode("1 2 3")
    response = decode_tokens(context + generated, tok, len(raw_text), len(context), "chatml")
    assert response == "1 2"
    # no generated token at all: the context is decoded whole and nothing remains
    assert decode_tokens(context, tok, len(raw_text), len(context), "chatml", return_end_reason=True) == (
        "",
        f"Gen length {len(context)}",
    )


def test_decode_tokens_raw(tok: QWenTokenizer, qwen_vl_testdata: Path) -> None:
    raw_text, context = make_context(tok, "Q: 2+2? A:", chat_format="raw")
    tokens = context + tok.encode(" 4 ") + [tok.eod_id] + tok.encode("junk")
    response, reason = decode_tokens(tokens, tok, len(raw_text), len(context), "raw", return_end_reason=True)
    # the original removes <|endoftext|> before looking for it, so the reason is always the length
    assert (response, reason) == ("4 junk", f"Gen length {len(tokens)}")
    with pytest.raises(UnknownChatFormatError):
        decode_tokens(tokens, tok, 0, 0, "nope")
