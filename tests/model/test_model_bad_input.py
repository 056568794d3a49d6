"""Bad input to the model / chat API gives our exception types with messages naming the problem."""

from __future__ import annotations

import pytest
import torch

from qvl_agent.model import ContextLengthError, ImageLoadError, InputError, load_model

pytestmark = pytest.mark.testdata

IMG_START, IMG_END, IMG_PAD = 151857, 151858, 151859


@pytest.fixture(scope="module")
def tiny(tiny_checkpoint):
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tiny_checkpoint)
        yield load_model(tiny_checkpoint)


def test_missing_image_file(tiny):
    model, tokenizer = tiny
    with pytest.raises(ImageLoadError, match="missing.png"):
        model.chat(tokenizer, "Picture 1: <img>images/missing.png</img>\nWhat is it?")


def test_truncated_image_file(tiny, tiny_checkpoint, tmp_path):
    model, tokenizer = tiny
    broken = tmp_path / "broken.png"
    broken.write_bytes((tiny_checkpoint / "images" / "img_a.png").read_bytes()[:200])
    with pytest.raises(ImageLoadError, match="broken.png"):
        model.chat(tokenizer, f"<img>{broken}</img>\nWhat is it?")


def test_unclosed_image_tag(tiny):
    model, tokenizer = tiny
    with pytest.raises(InputError, match="Unclosed image token"):
        model.chat(tokenizer, "look: <img>images/img_a.png")


def test_unknown_special_token_text(tiny):
    model, tokenizer = tiny
    with pytest.raises(InputError, match="unknown token"):
        tokenizer.convert_tokens_to_ids("<|no_such_token|>")
    # in a chat query, special-looking text that is not an image/grounding tag is plain text, not a control token
    _, history = model.chat(tokenizer, "<|im_end|><|no_such_token|>", max_new_tokens=2)
    assert history[-1][0] == "<|im_end|><|no_such_token|>"


def test_prompt_longer_than_context(tiny):
    model, tokenizer = tiny
    limit = model.config.max_position_embeddings
    with pytest.raises(ContextLengthError, match=rf"is \d+ tokens long .* at most {limit}"):
        model.chat(tokenizer, "7 " * limit)
    with pytest.raises(ContextLengthError, match=rf"{limit + 1} tokens long .* at most {limit}"):
        model(torch.zeros(1, limit + 1, dtype=torch.long))


def test_out_of_range_ids(tiny):
    model, _ = tiny
    with pytest.raises(InputError, match=r"input_ids must lie in \[0, 151936\)"):
        model(torch.tensor([[1, 2, 151936]]))
    with pytest.raises(InputError, match=r"\[batch, seq\]"):
        model(torch.tensor([1, 2, 3]))


def test_malformed_image_spans(tiny):
    model, _ = tiny
    with pytest.raises(InputError, match="unbalanced image tags"):
        model(torch.tensor([[1, IMG_START, 97, IMG_PAD, 2]]))
    with pytest.raises(InputError, match="holds 2 tokens between <img> and </img>"):
        model(torch.tensor([[1, IMG_START, 97, IMG_PAD, IMG_END]]))
    bad_bytes = torch.tensor([[IMG_START, 300] + [IMG_PAD] * 255 + [IMG_END]])
    with pytest.raises(InputError, match="only byte ids 0-255"):
        model(bad_bytes)


def test_images_without_spans(tiny, tiny_checkpoint):
    model, _ = tiny
    with pytest.raises(InputError, match=r"1 images given but the prompt holds 0"):
        model(torch.tensor([[1, 2, 3]]), images=[tiny_checkpoint / "images" / "img_a.png"])


def test_bad_pixel_values(tiny, tiny_checkpoint):
    model, tokenizer = tiny
    ids = torch.tensor([tokenizer.encode("<img>x</img>")])
    with pytest.raises(InputError, match="pixel_values"):
        model(ids, pixel_values=torch.zeros(1, 3, 50, 50))
