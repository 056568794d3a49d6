"""Qwen-VL visual encoder: key layout, sin-cos table and output parity with the reference vectors."""

from __future__ import annotations

import gzip
import json
import math

import pytest
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import load_file

from qvl_agent.model.errors import InputError
from qvl_agent.model.visual import (
    QWenVisionTransformer,
    Resampler,
    resize_position_table,
    sincos_2d,
)

IMAGES = ["img_a", "img_b", "img_c", "img_d"]
PREFIX = "transformer.visual."
SMALL = dict(
    image_size=28, patch_size=14, width=32, layers=1, heads=2, mlp_ratio=2.0, output_dim=48, n_queries=16
)


@pytest.fixture(scope="module")
def tiny_dir(qwen_vl_testdata):
    return qwen_vl_testdata / "tiny"


@pytest.fixture(scope="module")
def visual_config(tiny_dir) -> dict:
    return json.loads((tiny_dir / "config.json").read_text())["visual"]


@pytest.fixture(scope="module")
def checkpoint_visual(tiny_dir) -> dict[str, torch.Tensor]:
    """The tiny checkpoint's visual tensors (fp16 as stored), prefix stripped."""
    tensors = load_safetensors(gzip.decompress((tiny_dir / "model.safetensors.gz").read_bytes()))
    return {k.removeprefix(PREFIX): v for k, v in tensors.items() if k.startswith(PREFIX)}


@pytest.fixture(scope="module")
def vectors(tiny_dir) -> dict[str, torch.Tensor]:
    return load_file(tiny_dir / "vectors.safetensors")


@pytest.fixture(scope="module")
def tiny_visual(visual_config, checkpoint_visual) -> QWenVisionTransformer:
    model = QWenVisionTransformer.from_config(visual_config)
    model.load_state_dict({k: v.float() for k, v in checkpoint_visual.items()}, strict=True)
    return model.eval()


@pytest.mark.testdata
def test_state_dict_keys_and_shapes_match_official_checkpoint(visual_config, checkpoint_visual):
    model = QWenVisionTransformer.from_config(visual_config)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in checkpoint_visual.items()}
    assert ours == theirs


@pytest.mark.testdata
def test_sincos_table_matches_checkpoint(visual_config, checkpoint_visual):
    stored = checkpoint_visual["attn_pool.pos_embed"]
    grid = math.isqrt(stored.shape[0])
    table = sincos_2d(visual_config["output_dim"], grid)
    assert table.dtype == torch.float32
    assert torch.equal(table.to(torch.float16), stored)
    # A fresh (randomly initialised) model carries the same table.
    fresh = QWenVisionTransformer.from_config(visual_config)
    assert torch.equal(fresh.attn_pool.pos_embed, table)


def test_sincos_table_structure():
    table = sincos_2d(8, 3)  # 9 rows; first 4 columns encode the column index, last 4 the row index
    assert table.shape == (9, 8)
    assert torch.equal(table[0], torch.tensor([0.0, 0.0, 1.0, 1.0] * 2))
    row1_col2 = table[1 * 3 + 2]
    assert row1_col2[0].item() == pytest.approx(math.sin(2.0))
    assert row1_col2[4].item() == pytest.approx(math.sin(1.0))
    assert row1_col2[6].item() == pytest.approx(math.cos(1.0))
    assert row1_col2[1].item() == pytest.approx(math.sin(2.0 / 100))


@pytest.mark.testdata
@pytest.mark.parametrize("name", IMAGES)
def test_vit_and_visual_outputs_match_reference(tiny_visual, vectors, name):
    pixel_values = vectors[f"{name}.pixel_values"].unsqueeze(0)
    with torch.no_grad():
        vit_out = tiny_visual.forward_features(pixel_values)[0]
        visual_out = tiny_visual(pixel_values)[0]
    expected_vit, expected_out = vectors[f"{name}.vit_out"], vectors[f"{name}.visual_out"]
    assert vit_out.shape == expected_vit.shape and visual_out.shape == expected_out.shape
    vit_diff = (vit_out - expected_vit).abs().max().item()
    out_diff = (visual_out - expected_out).abs().max().item()
    print(f"{name}: vit_out max|diff| {vit_diff:.3g}, visual_out max|diff| {out_diff:.3g}")
    assert vit_diff < 1e-4
    assert out_diff < 1e-4


@pytest.mark.testdata
def test_encode_paths_equals_forward_on_reference_pixels(tiny_visual, tiny_dir, vectors):
    paths = [str(tiny_dir / "images" / f"{name}.png") for name in IMAGES]
    with torch.no_grad():
        encoded = tiny_visual.encode(paths)
        batch = torch.stack([vectors[f"{name}.pixel_values"] for name in IMAGES])
        forwarded = tiny_visual(batch)
    assert encoded.shape == (4, 256, 128)
    assert torch.equal(encoded, forwarded)
    for i, name in enumerate(IMAGES):
        assert (encoded[i] - vectors[f"{name}.visual_out"]).abs().max().item() < 1e-4


@pytest.mark.testdata
def test_batch_equals_single_images(tiny_visual, vectors):
    batch = torch.stack([vectors[f"{name}.pixel_values"] for name in IMAGES])
    with torch.no_grad():
        together = tiny_visual(batch)
        alone = torch.cat([tiny_visual(batch[i : i + 1]) for i in range(len(IMAGES))])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)


@pytest.mark.testdata
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_forward_is_close(visual_config, checkpoint_visual, vectors, dtype):
    model = QWenVisionTransformer.from_config(visual_config)
    model.load_state_dict({k: v.float() for k, v in checkpoint_visual.items()})
    model = model.to(dtype).eval()
    pixel_values = torch.stack([vectors[f"{name}.pixel_values"] for name in IMAGES])  # float32 input is cast
    with torch.no_grad():
        out = model(pixel_values)
        features = model.forward_features(pixel_values)
    assert out.dtype == dtype and features.dtype == dtype
    expected = torch.stack([vectors[f"{name}.visual_out"] for name in IMAGES])
    diff = (out.float() - expected).abs()
    assert torch.isfinite(out).all()
    # Outputs are O(1); bf16 keeps ~3 significant digits, fp16 ~4 (measured: max 0.08 / 0.006).
    max_tol, mean_tol = (0.2, 0.02) if dtype == torch.bfloat16 else (0.02, 0.003)
    assert diff.max().item() < max_tol
    assert diff.mean().item() < mean_tol


def test_position_table_resize():
    table = torch.randn(256, 6)
    assert resize_position_table(table, 256) is table
    small = resize_position_table(table, 16)
    assert small.shape == (16, 6)
    big = resize_position_table(table.to(torch.bfloat16), 1024)
    assert big.shape == (1024, 6) and big.dtype == torch.bfloat16
    # A constant table stays constant under bicubic resizing.
    const = resize_position_table(torch.full((256, 3), 0.5), 64)
    torch.testing.assert_close(const, torch.full((64, 3), 0.5))
    with pytest.raises(InputError, match="square"):
        resize_position_table(table, 15)


def test_small_model_shapes_and_other_image_sizes():
    model = QWenVisionTransformer(**SMALL).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 28, 28)).shape == (2, 16, 48)
        assert model.forward_features(torch.randn(2, 3, 28, 28)).shape == (2, 4, 32)
        # A larger square input works too: both position tables are resized to the 4x4 grid.
        assert model(torch.randn(1, 3, 56, 56)).shape == (1, 16, 48)


def test_kv_proj_is_identity_when_widths_match():
    model = QWenVisionTransformer(**{**SMALL, "width": 48})
    assert "attn_pool.kv_proj.weight" not in model.state_dict()
    assert model(torch.randn(1, 3, 28, 28)).shape == (1, 16, 48)


def test_fresh_initialisation_is_sensible():
    torch.manual_seed(0)
    model = QWenVisionTransformer(**{**SMALL, "width": 64, "layers": 2, "heads": 4})
    for name, param in model.named_parameters():
        assert torch.isfinite(param).all(), name
    block = model.transformer.resblocks[0]
    assert torch.equal(block.ln_1.weight, torch.ones(64)) and torch.equal(block.ln_1.bias, torch.zeros(64))
    assert torch.equal(block.mlp.c_fc.bias, torch.zeros(128))
    assert block.attn.in_proj.weight.std().item() == pytest.approx(0.02, rel=0.2)
    assert model.attn_pool.attn.in_proj_weight.std().item() == pytest.approx(0.02, rel=0.2)
    assert model.positional_embedding.std().item() == pytest.approx(64**-0.5, rel=0.2)
    assert not any(name.endswith("pos_embed") for name, _ in model.named_parameters())
    # Re-initialisation restores the fixed table even after it was overwritten.
    model.attn_pool.pos_embed.zero_()
    model.reset_parameters()
    assert torch.equal(model.attn_pool.pos_embed, sincos_2d(48, 4))


def test_gradients_reach_every_trainable_parameter():
    model = QWenVisionTransformer(**SMALL)
    model(torch.randn(2, 3, 28, 28)).square().mean().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_bad_pixel_values_raise_input_error():
    model = QWenVisionTransformer(**SMALL)
    with pytest.raises(InputError, match=r"\[N, 3, H, W\]"):
        model(torch.randn(3, 28, 28))
    with pytest.raises(InputError, match=r"\[N, 3, H, W\]"):
        model(torch.randn(1, 4, 28, 28))
    with pytest.raises(InputError, match="square"):
        model(torch.randn(1, 3, 28, 42))
    with pytest.raises(InputError, match="multiple of 14"):
        model(torch.randn(1, 3, 30, 30))
    with pytest.raises(InputError, match="torch.Tensor"):
        model([[0.0]])


def test_bad_config_raises_input_error():
    with pytest.raises(InputError, match="missing output_dim"):
        QWenVisionTransformer.from_config({k: v for k, v in SMALL.items() if k != "output_dim"})
    with pytest.raises(InputError, match="not divisible"):
        QWenVisionTransformer(**{**SMALL, "heads": 3})
    with pytest.raises(InputError, match="multiple of patch_size"):
        QWenVisionTransformer(**{**SMALL, "image_size": 30})
    with pytest.raises(InputError, match="perfect square"):
        Resampler(n_queries=10, embed_dim=16, num_heads=1, kv_dim=8)


def test_from_config_ignores_image_start_id_and_accepts_objects():
    config = {**SMALL, "image_start_id": 151857}
    config.pop("n_queries")
    model = QWenVisionTransformer.from_config(config)
    assert model.n_queries == 256 and model.attn_pool.query.shape == (256, 48)

    class Attrs:
        pass

    attrs = Attrs()
    for key, value in SMALL.items():
        setattr(attrs, key, value)
    assert QWenVisionTransformer.from_config(attrs).attn_pool.query.shape == (16, 48)


def test_image_processor_property_follows_image_size():
    model = QWenVisionTransformer(**SMALL)
    assert model.image_processor.image_size == 28
    assert model.image_processor is model.image_processor


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = QWenVisionTransformer(**{**SMALL, "layers": 2})
    pixels = torch.randn(2, 3, 28, 28)

    def grads() -> dict[str, torch.Tensor]:
        model.zero_grad()
        model(pixels).square().mean().backward()
        return {name: p.grad.clone() for name, p in model.named_parameters()}

    plain = grads()
    model.transformer.gradient_checkpointing = True
    checkpointed = grads()
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, atol=1e-6, rtol=1e-5, msg=name)


def test_released_qwen_vl_layout_on_meta_device():
    """The released config (448 px, ViT-bigG width 1664, 48 layers) builds with the official shapes."""
    released = dict(
        heads=16,
        image_size=448,
        image_start_id=151857,
        layers=48,
        mlp_ratio=4.9231,
        output_dim=4096,
        patch_size=14,
    )
    with torch.device("meta"):
        model = QWenVisionTransformer.from_config({**released, "width": 1664})
        out = model(torch.empty(2, 3, 448, 448))
        features = model.forward_features(torch.empty(2, 3, 448, 448))
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["conv1.weight"] == (1664, 3, 14, 14)
    assert shapes["positional_embedding"] == (256, 1664)
    assert shapes["transformer.resblocks.47.mlp.c_fc.weight"] == (8192, 1664)  # int(1664 * 4.9231)
    assert shapes["transformer.resblocks.47.attn.in_proj.weight"] == (3 * 1664, 1664)
    assert shapes["attn_pool.kv_proj.weight"] == (4096, 1664)
    assert shapes["attn_pool.attn.in_proj_weight"] == (3 * 4096, 4096)
    assert shapes["proj"] == (4096, 4096)
    assert model.attn_pool.attn.num_heads == 32
    assert "transformer.resblocks.48.ln_1.weight" not in shapes
    assert features.shape == (2, 1024, 1664) and out.shape == (2, 256, 4096)
    assert 1.8e9 < sum(p.numel() for p in model.parameters()) < 2.0e9


def test_448_pixel_grid_with_small_width():
    """32x32 patches: both 16x16 tables are resized (the path real checkpoints take)."""
    model = QWenVisionTransformer(**{**SMALL, "image_size": 448, "n_queries": 256}).eval()
    with torch.no_grad():
        features = model.forward_features(torch.randn(1, 3, 448, 448))
        out = model(torch.randn(1, 3, 448, 448))
    assert features.shape == (1, 1024, 32) and out.shape == (1, 256, 48)
    assert torch.isfinite(out).all()


def test_vit_attention_packs_qkv_per_head():
    """Row block h of ``in_proj`` holds head h's [q; k; v] (not the usual [all q; all k; all v])."""
    from qvl_agent.model.visual import VisualAttention

    torch.manual_seed(0)
    width, heads, seq = 12, 3, 5
    attn = VisualAttention(width, heads)
    x = torch.randn(2, seq, width)
    head_dim = width // heads
    w, b = attn.in_proj.weight, attn.in_proj.bias
    outputs = []
    for h in range(heads):
        rows = slice(3 * head_dim * h, 3 * head_dim * (h + 1))
        q, k, v = (x @ w[rows].T + b[rows]).split(head_dim, dim=-1)
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(head_dim), dim=-1)
        outputs.append(weights @ v)
    expected = attn.out_proj(torch.cat(outputs, dim=-1))
    with torch.no_grad():
        torch.testing.assert_close(attn(x), expected, atol=1e-6, rtol=1e-5)
