"""A spatially aligned initialisation of the Qwen-VL vision tower (same architecture, other starting weights).

With the default initialisation (every projection ~N(0, 0.02)) the resampler's attention logits are ~0.05,
so each of its queries averages *all* patches: the 256 image tokens the language model sees start out nearly
identical, and where an object is has to be learned through a uniform attention. Here instead:

- the ViT's learned position table starts as the 2-D sin-cos table of its patch grid (smooth, decodable
  positions instead of random vectors), scaled to the size of the patch embeddings;
- the resampler's query/key projections start as ``alpha * I`` and the learned query content is scaled down,
  so query ``k`` attends to the patches around its own grid cell (the query grid and the patch grid are both
  16x16 for the 128 px / 8 px demo tower): image token ``k`` starts out as "what is at cell k".

Everything stays trainable; only the starting point changes.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from qvl_agent.model.visual import QWenVisionTransformer, sincos_2d


@torch.no_grad()
def spatial_init(
    visual: QWenVisionTransformer,
    alpha: float = 3.0,
    pos_scale: float = 0.5,
    value_identity: bool = False,
    patch_std: float | None = None,
) -> None:
    """Re-initialise ``visual`` in place as described in the module docstring.

    ``value_identity``: also start the resampler's value and output projections as the identity, so each image
    token starts as the (normalised) ViT feature of its cell, position code included, rather than a random
    projection of it.

    ``patch_std``: re-draw the patch embedding with this standard deviation. Its output on a flat patch
    grows with sqrt(3 * patch**2) * std, and flat colour dominates these pictures: a 16 px patch needs half
    the default 0.02 to start at the 8 px patch's scale, where its content does not yet drown the position
    code the resampler's queries look for.
    """
    if patch_std is not None:
        nn.init.trunc_normal_(visual.conv1.weight, std=patch_std)
    grid = visual.grid_size
    table = sincos_2d(visual.width, grid) * pos_scale
    if visual.positional_embedding.shape[0] == grid * grid:
        visual.positional_embedding.copy_(table)
    else:  # the table is resized to the grid at run time: store it at its own (16x16) resolution
        side = math.isqrt(visual.positional_embedding.shape[0])
        visual.positional_embedding.copy_(sincos_2d(visual.width, side) * pos_scale)

    pool = visual.attn_pool
    attn: nn.MultiheadAttention = pool.attn
    dim = attn.embed_dim
    eye = torch.eye(dim) * alpha
    attn.in_proj_weight[:dim].copy_(eye)  # W_q
    attn.in_proj_weight[dim : 2 * dim].copy_(eye)  # W_k
    pool.ln_q.weight.fill_(0.1)  # learned query content starts small next to the position code
    if value_identity:
        attn.in_proj_weight[2 * dim :].copy_(torch.eye(dim))  # W_v
        attn.out_proj.weight.copy_(torch.eye(dim))
