"""A generation config without ``chat_format`` (e.g. rebuilt from the model config) still chats in ChatML."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from qvl_agent.model import load_model

pytestmark = pytest.mark.testdata


def test_chat_without_chat_format_in_the_generation_config(tiny_checkpoint: Path) -> None:
    model, tokenizer = load_model(tiny_checkpoint)
    reference, _ = model.chat(tokenizer, "Hello", history=None, max_new_tokens=4)
    config = copy.deepcopy(model.generation_config)
    del config.chat_format
    response, history = model.chat(
        tokenizer, "Hello", history=None, generation_config=config, max_new_tokens=4
    )
    assert response == reference and history == [("Hello", reference)]
