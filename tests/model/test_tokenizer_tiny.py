"""QWenTokenizer on a tiny hand-made vocabulary (no reference data needed): the same class loads any ranks file
in the ``qwen.tiktoken`` format and numbers the specials right after its size."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from qvl_agent.model.errors import InputError
from qvl_agent.model.tokenization_qwen import SPECIAL_TOKENS, QWenTokenizer


def _write_tiny_vocab(folder: Path) -> list[bytes]:
    tokens = [bytes([b]) for b in range(256)] + [b"ab", b"abc", b" a", b"  "]
    lines = [f"{base64.b64encode(t).decode()} {rank}" for rank, t in enumerate(tokens)]
    (folder / "qwen.tiktoken").write_text("\n".join(lines) + "\n")
    return tokens


def test_tiny_vocabulary_gets_specials_after_its_size(tmp_path: Path) -> None:
    tokens = _write_tiny_vocab(tmp_path)
    tiny = QWenTokenizer.from_pretrained(tmp_path)
    n = len(tokens)
    assert len(tiny) == tiny.vocab_size == n + len(SPECIAL_TOKENS) + 9
    assert tiny.eod_id == n and tiny.im_start_id == n + 1 and tiny.im_end_id == n + 2
    assert tiny.special_tokens["<|extra_204|>"] == n + 207
    assert (tiny.ref_start_id, tiny.img_start_id, tiny.img_end_id, tiny.img_pad_id) == (
        n + 208,
        n + 214,
        n + 215,
        n + 216,
    )
    assert tiny.encode("abc ab") == [257, ord(" "), 256]
    assert tiny.encode("<|im_start|>x<|im_end|>") == [n + 1, ord("x"), n + 2]
    ids = tiny.encode("<img>p.png</img>")
    assert len(ids) == 258 and ids[1:6] == list(b"p.png") and ids[6] == tiny.img_pad_id
    assert tiny.decode(ids + tiny.encode(" abc")) == "<img>p.png</img> abc"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("QQ== 0\nQg== 2\n", "ranks must be exactly 0..1"),
        ("QQ== 0 extra\n", "expected 'base64-token rank'"),
        ("!!!! 0\n", "cannot parse"),
        ("QQ== 0\nQQ== 1\n", "appears twice"),
        ("QQ== 0\nQg== 1\n", "needs at least 256"),
    ],
)
def test_bad_vocabulary_files_are_rejected(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "qwen.tiktoken").write_text(content)
    with pytest.raises(InputError, match=re.escape(message)):
        QWenTokenizer(str(tmp_path / "qwen.tiktoken"))


def test_tiny_vocabulary_round_trips_through_save_pretrained(tmp_path: Path) -> None:
    _write_tiny_vocab(tmp_path)
    tiny = QWenTokenizer.from_pretrained(tmp_path)
    out = tmp_path / "saved"
    tiny.save_pretrained(out)
    assert (out / "qwen.tiktoken").read_text() == (tmp_path / "qwen.tiktoken").read_text()
    again = QWenTokenizer.from_pretrained(out)
    text = "<|im_start|>abc<ref>ab</ref><img>x</img>"
    assert again.encode(text) == tiny.encode(text) and again.special_tokens == tiny.special_tokens


def test_tiny_vocabulary_grounding_helpers(tmp_path: Path) -> None:
    _write_tiny_vocab(tmp_path)
    tiny = QWenTokenizer.from_pretrained(tmp_path)
    text = tiny.from_list_format([{"image": "a.png"}, {"text": "find"}, {"ref": "it", "box": [[1, 2, 3, 4]]}])
    assert text == "Picture 1: <img>a.png</img>\nfind<ref>it</ref><box>(1,2),(3,4)</box>"
    assert tiny.fetch_latest_picture(text) == "a.png"
    assert tiny.fetch_all_box_with_ref(text) == [{"box": (1, 2, 3, 4), "ref": "it"}]
    ids = tiny.encode(text)
    assert tiny.decode(ids) == text
    assert tiny.decode(ids, skip_special_tokens=True, keep_image_special=True) == (
        "Picture 1: a.png\nfind<ref>it</ref><box>(1,2),(3,4)</box>"
    )
