"""A model that writes ``<img>`` without ``</img>`` must not break streaming (the strict decode would raise)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from qvl_agent.model import QWenTokenizer
from qvl_agent.model.errors import InputError

pytestmark = pytest.mark.testdata


@pytest.fixture(scope="module")
def tokenizer(qwen_vl_testdata: Path) -> QWenTokenizer:
    return QWenTokenizer(str(qwen_vl_testdata / "qwen.tiktoken"))


def test_unclosed_image_tag_is_strict_by_default_and_lenient_on_request(tokenizer: QWenTokenizer) -> None:
    hello = tokenizer.encode("Hello")
    ids = [*hello, tokenizer.img_start_id, *tokenizer.encode(" there")]
    with pytest.raises(InputError, match="Unclosed image token"):
        tokenizer.decode(ids)
    text = tokenizer.decode(ids, skip_special_tokens=True, strict_image_spans=False)
    assert text == "Hello there"
    # a closed span before the unclosed one is still decoded as a path
    closed = tokenizer.encode("<img>a.png</img>")
    assert tokenizer.decode([*closed, *ids], strict_image_spans=False) == "<img>a.png</img>Hello<img> there"


class _ForceImageTagFirst(LogitsProcessor):
    def __init__(self, token_id: int, prompt_length: int) -> None:
        self.token_id, self.prompt_length = token_id, prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[1] == self.prompt_length:
            scores = torch.full_like(scores, -1e9)
            scores[:, self.token_id] = 0.0
        return scores


def test_chat_stream_survives_a_generated_image_tag(tiny_checkpoint: Path) -> None:
    from qvl_agent.model import load_model
    from qvl_agent.prompting.chatml import make_context

    model, tok = load_model(tiny_checkpoint)
    _, context = make_context(tok, "Hi", [], "You are a helpful assistant.", 6144, "chatml")
    force = LogitsProcessorList([_ForceImageTagFirst(tok.img_start_id, len(context))])
    outputs = list(model.chat_stream(tok, "Hi", history=None, logits_processor=force, max_new_tokens=5))
    assert outputs and all(isinstance(o, str) for o in outputs)
