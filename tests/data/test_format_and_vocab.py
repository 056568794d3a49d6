"""Data validation errors name file, record and problem; the small vocabulary's file format and training."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from PIL import Image

from qvl_agent.data.format import DataFormatError, load_conversations
from qvl_agent.data.synthetic import SyntheticDataset
from qvl_agent.data.vocab import corpus_texts, default_vocab_path, read_tiktoken, train_ranks, write_tiktoken
from qvl_agent.model.tokenization_qwen import QWenTokenizer


@pytest.fixture
def folder(tmp_path):
    Image.new("RGB", (8, 8), "red").save(tmp_path / "a.png")
    return tmp_path


def write(folder, records, name="data.json"):
    path = folder / name
    path.write_text(records if isinstance(records, str) else json.dumps(records))
    return path


GOOD = {
    "id": "x1",
    "conversations": [
        {"from": "user", "value": "Picture 1: <img>a.png</img>\nHi"},
        {"from": "assistant", "value": "Hello"},
    ],
}


def test_good_file_resolves_pictures_next_to_it(folder):
    (conv,) = load_conversations(write(folder, [GOOD]))
    assert conv.id == "x1" and conv.images == {"a.png": str(folder / "a.png")}


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ('[{"id": 1, "conversations": [', "bad JSON"),
        ({"id": "x"}, "expected a JSON list"),
        (
            [
                GOOD,
                {
                    "id": "x2",
                    "conversations": [{"from": "human", "value": "hi"}, {"from": "assistant", "value": "x"}],
                },
            ],
            "record 1 (id 'x2'): turn 0: wrong role 'human'",
        ),
        (
            [{"id": "x3", "conversations": [{"from": "assistant", "value": "hi"}]}],
            "record 0 (id 'x3'): turn 0: wrong role 'assistant'",
        ),
        (
            [
                {
                    "id": "x4",
                    "conversations": [
                        {"from": "user", "value": "<img>a.png\nhi"},
                        {"from": "assistant", "value": "x"},
                    ],
                }
            ],
            "record 0 (id 'x4'): turn 0: unclosed <img>",
        ),
        (
            [
                {
                    "id": "x5",
                    "conversations": [
                        {"from": "user", "value": "<img>nope.png</img>"},
                        {"from": "assistant", "value": "x"},
                    ],
                }
            ],
            "record 0 (id 'x5'): turn 0: missing image 'nope.png'",
        ),
        (
            [{"id": "x6", "conversations": [{"from": "user", "value": "hi"}]}],
            "last turn must be from the assistant",
        ),
        ([{"id": "x7", "conversations": []}], "non-empty list"),
    ],
)
def test_bad_data_names_file_record_and_problem(folder, records, message):
    path = write(folder, records)
    with pytest.raises(DataFormatError) as info:
        load_conversations(path)
    assert str(info.value).startswith(str(path))
    assert message in str(info.value)


def test_train_cli_rejects_bad_data_with_one_line(folder):
    from qvl_agent.training.cli import train

    path = write(
        folder,
        [
            {
                "id": "bad",
                "conversations": [
                    {"from": "user", "value": "<img>a.png"},
                    {"from": "assistant", "value": "x"},
                ],
            }
        ],
    )
    result = CliRunner().invoke(
        train, ["--data", str(path), "--config", "{}", "-o", str(folder / "run"), "--quiet"]
    )
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert (
        len(lines) == 1
        and str(path) in lines[0]
        and "record 0 (id 'bad')" in lines[0]
        and "unclosed <img>" in lines[0]
    )


def test_jsonl_bad_line_is_named(folder):
    path = write(folder, json.dumps(GOOD) + "\n{oops\n", name="d.jsonl")
    with pytest.raises(DataFormatError, match=r"d\.jsonl: line 2: bad JSON"):
        load_conversations(path)


def test_vocab_file_round_trip_and_tokenizer_specials_follow_it(tmp_path):
    records = [s.record() for s in SyntheticDataset(60, "train", 0)]
    ranks = train_ranks(corpus_texts(records), vocab_size=400)
    assert len(ranks) <= 400 and all(ranks[bytes([b])] == b for b in range(256))
    assert sorted(ranks.values()) == list(range(len(ranks)))
    path = write_tiktoken(ranks, tmp_path / "v.tiktoken")
    assert read_tiktoken(path) == ranks
    tok = QWenTokenizer(str(path))
    assert tok.eod_id == len(ranks) and tok.img_start_id == len(ranks) + 214
    text = records[0]["conversations"][1]["value"]
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert len(ids) < len(text.encode())  # merges are used


def test_packaged_vocab_is_small_and_loads():
    ranks = read_tiktoken(default_vocab_path())
    assert 300 < len(ranks) <= 5000
    tok = QWenTokenizer(str(default_vocab_path()))
    assert len(tok) == len(ranks) + 217
    assert tok.decode(tok.encode("<|im_start|>user\nhello<|im_end|>")) == "<|im_start|>user\nhello<|im_end|>"
