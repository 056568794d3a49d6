"""Small models may use fewer resampler queries than the released 256: the tokenizer's ``image_span`` and the
visual config's ``n_queries`` then set how many slots an ``<img>`` span has, end to end."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import torch
from PIL import Image

from qvl_agent.model import QWenConfig, QWenLMHeadModel, QWenTokenizer, load_model
from qvl_agent.model.errors import InputError


def _small_checkpoint(folder: Path, n_queries: int) -> Path:
    tokens = [bytes([b]) for b in range(256)] + [b"ab", b"abc", b" a", b"  "]
    (folder / "qwen.tiktoken").write_text(
        "".join(f"{base64.b64encode(t).decode()} {rank}\n" for rank, t in enumerate(tokens))
    )
    tokenizer = QWenTokenizer(str(folder / "qwen.tiktoken"), image_span=n_queries)
    config = QWenConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        kv_channels=16,
        intermediate_size=64,
        seq_length=512,
        max_position_embeddings=512,
        visual={
            "heads": 2,
            "image_size": 32,
            "layers": 1,
            "mlp_ratio": 2.0,
            "output_dim": 32,
            "patch_size": 8,
            "width": 16,
            "n_queries": n_queries,
            "image_start_id": tokenizer.img_start_id,
        },
    )
    torch.manual_seed(0)
    QWenLMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_sixteen_query_model_runs_images_end_to_end(tmp_path: Path) -> None:
    model, tokenizer = load_model(_small_checkpoint(tmp_path, n_queries=16))
    assert tokenizer.image_span == 16 and model.transformer.visual.n_queries == 16
    ids = tokenizer.encode("<img>a</img>ab")
    assert len(ids) == 16 + 2 + 1
    picture = Image.new("RGB", (40, 30), "red")
    out = model(torch.tensor([ids]), images=[picture])
    assert out.logits.shape == (1, len(ids), len(tokenizer))
    # the features really are spliced in: another picture changes the logits after the span
    other = model(torch.tensor([ids]), images=[Image.new("RGB", (40, 30), "blue")])
    assert not torch.allclose(out.logits[0, -1], other.logits[0, -1])


def test_span_of_the_wrong_length_is_a_clear_error(tmp_path: Path) -> None:
    model, _ = load_model(_small_checkpoint(tmp_path, n_queries=16))
    released = QWenTokenizer(str(tmp_path / "qwen.tiktoken"))  # 256-slot spans
    ids = released.encode("<img>a</img>")
    with pytest.raises(InputError, match="needs exactly 16"):
        model(torch.tensor([ids]), images=[Image.new("RGB", (8, 8))])


def test_tokenizer_and_model_spans_must_agree(tmp_path: Path) -> None:
    from qvl_agent.model.loading import CheckpointLoadError

    folder = _small_checkpoint(tmp_path, n_queries=16)
    QWenTokenizer(str(folder / "qwen.tiktoken")).save_pretrained(folder)  # back to 256-slot spans
    with pytest.raises(CheckpointLoadError, match="resampler has 16 queries"):
        load_model(folder)
