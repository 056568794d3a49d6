"""Property tests of QWenTokenizer on the real vocabulary: round trips that must hold for any text."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qvl_agent.model.tokenization_qwen import IMG_TOKEN_SPAN, QWenTokenizer

pytestmark = pytest.mark.testdata

SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# text that may contain tag fragments but never a complete "<img>" (which would need a closing tag)
texts = st.text(alphabet=st.characters(codec="utf-8"), max_size=60).filter(lambda t: "<img>" not in t)
paths = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="<>"), min_size=0, max_size=60
).filter(lambda p: len(unicodedata.normalize("NFC", p).encode("utf-8")) < IMG_TOKEN_SPAN)


@pytest.fixture(scope="module")
def tok(qwen_vl_testdata: Path) -> QWenTokenizer:
    return QWenTokenizer(str(qwen_vl_testdata / "qwen.tiktoken"))


@SETTINGS
@given(text=texts)
def test_decode_inverts_encode_up_to_nfc(tok: QWenTokenizer, text: str) -> None:
    ids = tok.encode(text)
    assert tok.decode(ids) == unicodedata.normalize("NFC", text)
    assert tok.convert_tokens_to_string(tok.tokenize(text)) == unicodedata.normalize("NFC", text)
    assert all(0 <= i < len(tok) for i in ids)


@SETTINGS
@given(text=texts)
def test_plain_text_mode_never_produces_specials(tok: QWenTokenizer, text: str) -> None:
    ids = tok.encode(text, allowed_special=set())
    assert all(i < tok.eod_id for i in ids)
    assert tok.decode(ids) == unicodedata.normalize("NFC", text)


@SETTINGS
@given(before=texts, path=paths, after=texts)
def test_image_span_round_trip(tok: QWenTokenizer, before: str, path: str, after: str) -> None:
    text = f"{before}<img>{path}</img>{after}"
    ids = tok.encode(text)
    start = ids.index(tok.img_start_id)
    span = ids[start : start + IMG_TOKEN_SPAN + 2]
    assert span[-1] == tok.img_end_id
    raw = unicodedata.normalize("NFC", path).encode("utf-8")
    assert span[1 : 1 + len(raw)] == list(raw)
    assert tok.decode(ids) == unicodedata.normalize("NFC", text)
    assert tok.to_list_format(f"<img>{path}</img>") == [{"image": unicodedata.normalize("NFC", path)}]
