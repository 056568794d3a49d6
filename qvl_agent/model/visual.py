"""The Qwen-VL visual encoder: a CLIP-style ViT followed by a one-layer cross-attention resampler.

Pixels ``[N, 3, S, S]`` -> conv patchify -> + positional table -> ``ln_pre`` -> pre-LN transformer blocks
(``vit_out``) -> resampler (256 learned queries cross-attending to the patch tokens) -> ``ln_post`` -> ``@ proj``
-> ``[N, 256, output_dim]`` image embeddings that the language model splices between ``<img>`` and ``</img>``.

Parameter names match the official checkpoints under the ``transformer.visual.`` prefix, so
``module.load_state_dict({k.removeprefix("transformer.visual."): v ...})`` loads them directly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from qvl_agent.model.errors import InputError
from qvl_agent.model.image_processing import ImageSource, QWenImageProcessor

LAYER_NORM_EPS = 1e-6
# The ViT's learned position table always has 256 rows (a 16x16 grid), whatever the image size.
POSITION_TABLE_ROWS = 256
INIT_STD = 0.02


def resize_position_table(table: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """Resize a ``[side*side, dim]`` position table to ``num_tokens`` rows (a square grid).

    Bicubic interpolation (``align_corners=False``) computed in float32, returned in the table's dtype;
    the table itself is returned when the grid already matches.
    """
    src_side = math.isqrt(table.shape[0])
    dst_side = math.isqrt(num_tokens)
    if src_side * src_side != table.shape[0] or dst_side * dst_side != num_tokens:
        raise InputError(
            f"position tables need square grids: cannot resize {table.shape[0]} rows to {num_tokens} tokens"
        )
    if src_side == dst_side:
        return table
    grid = table.float().reshape(1, src_side, src_side, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(dst_side, dst_side), mode="bicubic", align_corners=False)
    return grid.permute(0, 2, 3, 1).reshape(num_tokens, -1).to(table.dtype)


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """``[len(positions), dim]`` table: sines of ``positions * freq`` then cosines, freq = 10000^(-2i/dim)."""
    if dim % 2:
        raise InputError(f"sin-cos position dimension must be even, got {dim}")
    freqs = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    angles = positions.to(torch.float64).reshape(-1, 1) * freqs.reshape(1, -1)
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_2d(dim: int, grid_size: int) -> torch.Tensor:
    """The resampler's fixed 2-D sin-cos table, ``[grid_size**2, dim]`` float32, rows in row-major order.

    The first half of each row encodes the column index, the second half the row index (the MAE layout).
    """
    if dim % 4:
        raise InputError(f"2-D sin-cos position dimension must be a multiple of 4, got {dim}")
    coords = torch.arange(grid_size, dtype=torch.float64)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")
    table = torch.cat([sincos_1d(dim // 2, cols), sincos_1d(dim // 2, rows)], dim=1)
    return table.to(torch.float32)


class VisualAttention(nn.Module):
    """ViT self-attention. ``in_proj`` packs q, k, v *per head*: its output is viewed as ``[..., heads, 3*head_dim]``."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads:
            raise InputError(f"visual width {width} is not divisible by {heads} heads")
        self.heads = heads
        self.head_dim = width // heads
        self.in_proj = nn.Linear(width, 3 * width)
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, width = x.shape
        qkv = self.in_proj(x).view(batch, seq, self.heads, 3 * self.head_dim)
        q, k, v = (t.transpose(1, 2) for t in qkv.split(self.head_dim, dim=-1))  # each [B, heads, seq, hd]
        out = F.scaled_dot_product_attention(q, k, v)  # scale 1/sqrt(head_dim), no mask
        return self.out_proj(out.transpose(1, 2).reshape(batch, seq, width))


class VisualMLP(nn.Module):
    """``c_fc`` -> exact GELU -> ``c_proj``."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.c_fc = nn.Linear(width, hidden)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))


class VisualBlock(nn.Module):
    """Pre-LN transformer block: ``x + attn(ln_1(x))`` then ``x + mlp(ln_2(x))``."""

    def __init__(self, width: int, heads: int, mlp_width: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.attn = VisualAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.mlp = VisualMLP(width, mlp_width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class VisualEncoder(nn.Module):
    """The stack of ViT blocks (``transformer.resblocks.N`` in checkpoints); no final norm.

    Set ``gradient_checkpointing = True`` (transformers' ``gradient_checkpointing_enable()`` does) to recompute
    each block in the backward pass instead of keeping its activations.
    """

    def __init__(self, width: int, layers: int, heads: int, mlp_width: int) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(VisualBlock(width, heads, mlp_width) for _ in range(layers))
        self.gradient_checkpointing = False
        self._gradient_checkpointing_func = partial(torch.utils.checkpoint.checkpoint, use_reentrant=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        checkpointing = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for block in self.resblocks:
            x = self._gradient_checkpointing_func(block.__call__, x) if checkpointing else block(x)
        return x


class Resampler(nn.Module):
    """Cross-attention pooling of any number of patch tokens into ``n_queries`` tokens (``attn_pool``).

    query = ``ln_q(query) + pos_embed``; key = ``ln_kv(kv_proj(x)) + pos_embed`` resized to the patch grid;
    value = ``ln_kv(kv_proj(x))``. ``pos_embed`` is the fixed 2-D sin-cos table (a non-trainable buffer).
    """

    def __init__(self, n_queries: int, embed_dim: int, num_heads: int, kv_dim: int) -> None:
        super().__init__()
        grid_size = math.isqrt(n_queries)
        if grid_size * grid_size != n_queries:
            raise InputError(f"n_queries must be a perfect square (a grid of queries), got {n_queries}")
        if num_heads < 1 or embed_dim % num_heads:
            raise InputError(f"resampler width {embed_dim} cannot be split into {num_heads} heads")
        self.grid_size = grid_size
        self.query = nn.Parameter(torch.empty(n_queries, embed_dim))
        self.register_buffer("pos_embed", sincos_2d(embed_dim, grid_size), persistent=True)
        # The official layout has no kv_proj weight when the ViT width already equals the output width.
        self.kv_proj = nn.Linear(kv_dim, embed_dim, bias=False) if kv_dim != embed_dim else nn.Identity()
        self.attn = nn.MultiheadAttention(embed_dim, num_heads, batch_first=True)
        self.ln_q = nn.LayerNorm(embed_dim, eps=LAYER_NORM_EPS)
        self.ln_kv = nn.LayerNorm(embed_dim, eps=LAYER_NORM_EPS)
        nn.init.trunc_normal_(self.query, std=INIT_STD)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kv = self.ln_kv(self.kv_proj(x))  # [B, P, D]
        # The table is a float32 buffer that ``from_pretrained(dtype=...)`` leaves as it is: run it in the
        # weights' dtype (as the original, whose table is a frozen parameter cast with the model).
        pos_embed = self.pos_embed.to(self.query.dtype)
        key_pos = resize_position_table(pos_embed, x.shape[1])
        query = self.ln_q(self.query) + pos_embed  # [Q, D]
        query = query.unsqueeze(0).expand(x.shape[0], -1, -1)
        out, _ = self.attn(query, kv + key_pos, kv, need_weights=False)
        return out


class QWenVisionTransformer(nn.Module):
    """Qwen-VL's visual encoder (``transformer.visual`` in official checkpoints).

    ``forward(pixel_values [N, 3, S, S]) -> [N, n_queries, output_dim]``; ``encode(images)`` also loads and
    preprocesses pictures. Build it from a checkpoint config's ``visual`` dict with :meth:`from_config`.
    """

    def __init__(
        self,
        image_size: int = 448,
        patch_size: int = 14,
        width: int = 1664,
        layers: int = 48,
        heads: int = 16,
        mlp_ratio: float = 4.9231,
        output_dim: int = 4096,
        n_queries: int = 256,
        resampler_heads: int | None = None,
    ) -> None:
        super().__init__()
        for name, value in [
            ("image_size", image_size),
            ("patch_size", patch_size),
            ("width", width),
            ("layers", layers),
            ("heads", heads),
            ("output_dim", output_dim),
            ("n_queries", n_queries),
        ]:
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(f"visual config {name} must be a positive integer, got {value!r}")
        if image_size % patch_size:
            raise InputError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        mlp_width = int(width * mlp_ratio)
        if mlp_width < 1:
            raise InputError(f"mlp_ratio {mlp_ratio!r} gives an empty MLP for width {width}")
        if resampler_heads is None:
            # The original uses output_dim // 128 heads; small demo models still get one.
            resampler_heads = max(1, output_dim // 128)

        self.image_size = image_size
        self.patch_size = patch_size
        self.grid_size = image_size // patch_size
        self.width = width
        self.output_dim = output_dim
        self.n_queries = n_queries

        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        self.positional_embedding = nn.Parameter(torch.empty(POSITION_TABLE_ROWS, width))
        self.ln_pre = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.transformer = VisualEncoder(width, layers, heads, mlp_width)
        self.attn_pool = Resampler(n_queries, output_dim, resampler_heads, kv_dim=width)
        self.ln_post = nn.LayerNorm(output_dim, eps=LAYER_NORM_EPS)
        self.proj = nn.Parameter(torch.empty(output_dim, output_dim))
        self._image_processor: QWenImageProcessor | None = None
        self.reset_parameters()

    @classmethod
    def from_config(cls, visual: Mapping[str, Any] | Any) -> QWenVisionTransformer:
        """Build from a config's ``visual`` dict (or an object with those attributes).

        Keys: ``image_size, patch_size, width, layers, heads, mlp_ratio, output_dim`` and optionally
        ``n_queries`` (default 256); ``image_start_id`` and other extra keys are ignored here.
        """

        def get(key: str, default: Any = None) -> Any:
            if isinstance(visual, Mapping):
                return visual.get(key, default)
            return getattr(visual, key, default)

        required = ("image_size", "patch_size", "width", "layers", "heads", "mlp_ratio", "output_dim")
        missing = [key for key in required if get(key) is None]
        if missing:
            raise InputError(f"visual config is missing {', '.join(missing)}")
        kwargs = {key: get(key) for key in required}
        kwargs["n_queries"] = get("n_queries", 256) or 256
        if get("resampler_heads") is not None:
            kwargs["resampler_heads"] = get("resampler_heads")
        return cls(**kwargs)

    # ----------------------------------------------------------------------------------------- weights

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Initialise one submodule (use with ``self.apply``); the training code starts from this."""
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.trunc_normal_(module.weight, std=INIT_STD)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.MultiheadAttention):
            nn.init.trunc_normal_(module.in_proj_weight, std=INIT_STD)
            nn.init.zeros_(module.in_proj_bias)
        elif isinstance(module, Resampler):
            nn.init.trunc_normal_(module.query, std=INIT_STD)
            module.pos_embed.copy_(sincos_2d(module.pos_embed.shape[1], module.grid_size))
        elif isinstance(module, QWenVisionTransformer):
            nn.init.normal_(module.positional_embedding, std=module.width**-0.5)
            nn.init.normal_(module.proj, std=module.output_dim**-0.5)

    def reset_parameters(self) -> None:
        """(Re-)initialise every weight: truncated normal(0.02) linears, unit LayerNorms, sin-cos table."""
        self.apply(self._init_weights)

    # ----------------------------------------------------------------------------------------- forward

    @property
    def dtype(self) -> torch.dtype:
        return self.conv1.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.conv1.weight.device

    @property
    def image_processor(self) -> QWenImageProcessor:
        """The preprocessing that matches this encoder's ``image_size``."""
        if self._image_processor is None or self._image_processor.image_size != self.image_size:
            self._image_processor = QWenImageProcessor(self.image_size)
        return self._image_processor

    def _check_pixels(self, pixel_values: torch.Tensor) -> None:
        if not isinstance(pixel_values, torch.Tensor):
            raise InputError(f"pixel_values must be a torch.Tensor, got {type(pixel_values).__name__}")
        if pixel_values.dim() != 4 or pixel_values.shape[1] != 3:
            raise InputError(f"pixel_values must have shape [N, 3, H, W], got {list(pixel_values.shape)}")
        height, width = pixel_values.shape[-2:]
        if height != width or height % self.patch_size:
            raise InputError(
                f"pixel_values must be square with a side that is a multiple of {self.patch_size} "
                f"(expected {self.image_size}x{self.image_size}), got {height}x{width}"
            )

    def forward_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Patch tokens after the last ViT block: ``[N, (S/patch)**2, width]`` (``vit_out``)."""
        self._check_pixels(pixel_values)
        x = pixel_values.to(device=self.device, dtype=self.dtype)
        x = self.conv1(x)  # [N, width, grid, grid]
        x = x.flatten(2).transpose(1, 2)  # [N, grid*grid, width], row-major patches
        x = x + resize_position_table(self.positional_embedding, x.shape[1])
        x = self.ln_pre(x)
        return self.transformer(x)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Image embeddings ``[N, n_queries, output_dim]`` for the language model."""
        x = self.attn_pool(self.forward_features(pixel_values))
        return self.ln_post(x) @ self.proj

    def encode(self, images: Sequence[ImageSource] | ImageSource) -> torch.Tensor:
        """Load, preprocess and encode pictures (paths, URLs, data URLs, bytes or PIL images)."""
        return self(self.image_processor(images))
