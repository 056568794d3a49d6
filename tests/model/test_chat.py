"""``model.chat`` / ``chat_stream`` against the original's two-turn chat on the tiny checkpoint."""

from __future__ import annotations

import json
import threading

import pytest
import torch
from PIL import Image

from qvl_agent.model import InputError, StopWordsLogitsProcessor, load_model

pytestmark = pytest.mark.testdata

EOS, IM_START, IM_END = 151643, 151644, 151645


@pytest.fixture(scope="module")
def tiny(tiny_checkpoint, device):
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tiny_checkpoint)
        yield load_model(tiny_checkpoint, device=device)


@pytest.fixture(scope="module")
def reference(qwen_vl_testdata):
    return json.loads((qwen_vl_testdata / "tiny" / "vectors.json").read_text())["chat"]


@pytest.fixture
def generate_calls(tiny, monkeypatch):
    """Record every sequence ``model.generate`` returns (the chat API's raw output)."""
    model, _ = tiny
    calls: list[list[int]] = []
    original = model.generate

    def spy(*args, **kwargs):
        out = original(*args, **kwargs)
        calls.append(out[0].tolist())
        return out

    monkeypatch.setattr(model, "generate", spy)
    return calls


def _split(sequence: list[int], context: list[int]) -> tuple[list[int], list[int]]:
    return sequence[: len(context)], sequence[len(context) :]


def test_two_turn_chat_matches_reference(tiny, reference, generate_calls):
    model, tokenizer = tiny
    turn1, turn2 = reference["turn1"], reference["turn2"]

    response, history = model.chat(tokenizer, turn1["query"], history=None)
    assert response == turn1["response"]
    assert [list(turn) for turn in history] == turn1["history_out"]
    context, generated = _split(generate_calls[0], turn1["context_tokens"])
    assert context == turn1["context_tokens"]
    assert generated == turn1["generated_ids"]

    response, history = model.chat(tokenizer, turn2["query"], history=history)
    assert response == turn2["response"]
    assert [list(turn) for turn in history] == turn2["history_out"]
    context, generated = _split(generate_calls[1], turn2["context_tokens"])
    assert context == turn2["context_tokens"]
    assert generated == turn2["generated_ids"]


def test_chat_with_in_memory_image(tiny, reference, tiny_checkpoint):
    """The picture passed as ``images=[PIL]``; the text inside <img> is only a short reference."""
    model, tokenizer = tiny
    picture = Image.open(tiny_checkpoint / "images" / "img_a.png")
    query = reference["turn1"]["query"].replace("images/img_a.png", "photo")
    response, history = model.chat(tokenizer, query, images=[picture])
    assert response == reference["turn1"]["response"]
    # turn 2: the history's <img> span needs its picture again (one per span of the rendered prompt)
    response, _ = model.chat(tokenizer, reference["turn2"]["query"], history=history, images=[picture])
    assert response == reference["turn2"]["response"]


def test_stop_word_forces_eos_on_the_next_step(tiny, reference, generate_calls):
    """Quirk 4: a stop word is kept and followed by a forced <|endoftext|>; decoding drops both."""
    model, tokenizer = tiny
    expected = reference["turn1"]["generated_ids"]
    stop = expected[2]
    response, _ = model.chat(
        tokenizer, reference["turn1"]["query"], stop_words_ids=[[stop]], append_history=False
    )
    context_length = len(reference["turn1"]["context_tokens"])
    assert generate_calls[0][context_length:] == expected[:3] + [EOS]
    assert response == tokenizer.decode(expected[:3]).strip()


def test_stop_words_processor_unit():
    processor = StopWordsLogitsProcessor([[IM_END], [IM_START], [5, 6], [EOS]], eos_token_id=EOS)
    assert processor.stop_words_ids == [[IM_END], [IM_START], [5, 6]]
    ids = torch.tensor([[1, 2, IM_END], [4, 5, 6], [6, 5, 4]])
    scores = processor(ids, torch.zeros(3, 151936))
    assert scores[:, EOS].tolist() == [2.0**15, 2.0**15, 0.0]


def test_generation_config_is_honoured(tiny, reference, generate_calls):
    model, tokenizer = tiny
    assert model.generation_config.max_new_tokens == 16
    model.chat(tokenizer, reference["turn1"]["query"], max_new_tokens=3, append_history=False)
    assert len(generate_calls[0]) == len(reference["turn1"]["context_tokens"]) + 3
    assert model.generation_config.max_new_tokens == 16  # the per-call override did not leak


def test_chat_stream_yields_growing_text(tiny, reference):
    model, tokenizer = tiny
    chunks = list(model.chat_stream(tokenizer, reference["turn1"]["query"]))
    generated = reference["turn1"]["generated_ids"]
    assert len(chunks) == len(generated)
    for i, chunk in enumerate(chunks):
        assert chunk == tokenizer.decode(
            generated[: i + 1], skip_special_tokens=True, errors="ignore", keep_image_special=True
        )


def test_chat_stream_can_be_abandoned(tiny, reference):
    model, tokenizer = tiny
    stream = model.chat_stream(tokenizer, reference["turn1"]["query"], max_new_tokens=200)
    first = next(stream)
    stream.close()  # stops the generation thread (joined before close returns)
    assert first
    assert not [t for t in threading.enumerate() if t.name == "qwen-generate" and t.is_alive()]


def test_chat_rejects_stream_flag(tiny):
    model, tokenizer = tiny
    with pytest.raises(InputError, match="chat_stream"):
        model.chat(tokenizer, "hi", stream=True)


def test_chat_accepts_a_tuple_history_and_names_bad_queries(tiny):
    model, tokenizer = tiny
    turns = (("hi", "hello"),)
    _, history = model.chat(tokenizer, "again", history=turns, max_new_tokens=2)
    assert isinstance(history, list) and len(history) == 2 and history[0] == ("hi", "hello")
    assert turns == (("hi", "hello"),)  # the caller's tuple is untouched
    with pytest.raises(InputError, match="query must be a str.*from_list_format"):
        model.chat(tokenizer, [{"text": "hi"}])
    with pytest.raises(InputError, match="query must be a str"):
        next(model.chat_stream(tokenizer, None))


def test_stream_token_ids_follows_the_first_row_of_a_batch(tiny, reference):
    model, _ = tiny
    context = reference["turn1"]["context_tokens"]
    batch = torch.tensor([context, [EOS] * 5 + context[5:]], device=model.device)
    kwargs = {"max_new_tokens": 5, "do_sample": False, "eos_token_id": EOS, "pad_token_id": EOS}
    expected = model.generate(batch, attention_mask=torch.ones_like(batch), **kwargs)[0, len(context) :]
    streamed = list(model.stream_token_ids(batch, attention_mask=torch.ones_like(batch), **kwargs))
    assert streamed == expected.tolist()
