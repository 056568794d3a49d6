"""Qwen-VL configuration: reads the official ``config.json`` of Qwen-VL / Qwen-VL-Chat as it is."""

from __future__ import annotations

from typing import Any

import torch
from transformers import PreTrainedConfig

# The vision tower of the released Qwen-VL (ViT-bigG, 448 px) -- used when a config has no ``visual`` entry.
DEFAULT_VISUAL: dict[str, Any] = {
    "heads": 16,
    "image_size": 448,
    "image_start_id": 151857,
    "layers": 48,
    "mlp_ratio": 4.9231,
    "output_dim": 4096,
    "patch_size": 14,
    "width": 1664,
}


class QWenConfig(PreTrainedConfig):
    r"""Configuration of a Qwen-VL model (language model + ``visual`` vision tower).

    Every key of the official ``config.json`` is accepted under its original name.  Notable ones:

    - ``kv_channels``: per-head dimension; ``hidden_size == num_attention_heads * kv_channels``.
    - ``intermediate_size``: total width of the SwiGLU MLP; each of ``w1``/``w2`` has half of it.
    - ``seq_length``: training context; beyond it, dynamic NTK (``use_dynamic_ntk``) and log-n query scaling
      (``use_logn_attn``) kick in at inference.
    - ``max_position_embeddings``: the longest prompt accepted.
    - ``fp32`` / ``bf16`` / ``fp16``: default precision when ``from_pretrained`` gets no ``dtype``. When none is
      set, the original picks bf16 (or fp16) on a CUDA machine and fp32 otherwise; so do we.
    - ``visual``: a plain dict with the vision tower's settings (``width``, ``layers``, ``heads``, ``image_size``,
      ``patch_size``, ``mlp_ratio``, ``output_dim``, ``image_start_id``).

    ``auto_map`` (which points at the original remote code) is dropped on load: this package never runs it.
    """

    model_type = "qwen"
    keys_to_ignore_at_inference = ["past_key_values", "cache"]

    vocab_size: int = 151936
    hidden_size: int = 4096
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    kv_channels: int = 128
    intermediate_size: int = 22016
    emb_dropout_prob: float = 0.0
    attn_dropout_prob: float = 0.0
    layer_norm_epsilon: float = 1e-6
    initializer_range: float = 0.02
    max_position_embeddings: int = 8192
    seq_length: int = 2048
    scale_attn_weights: bool = True
    use_cache: bool = True
    rotary_pct: float = 1.0
    rotary_emb_base: float = 10000
    use_dynamic_ntk: bool = True
    use_logn_attn: bool = True
    use_flash_attn: bool | str = "auto"
    no_bias: bool = True
    bf16: bool = False
    fp16: bool = False
    fp32: bool = False
    onnx_safe: bool | None = None
    tokenizer_type: str = "QWenTokenizer"
    tie_word_embeddings: bool = False
    visual: dict[str, Any] | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        kwargs.pop("auto_map", None)
        super().__post_init__(**kwargs)
        self.visual = {**DEFAULT_VISUAL, **(self.visual or {})}
        if self.hidden_size != self.num_attention_heads * self.kv_channels:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must equal num_attention_heads ({self.num_attention_heads}) "
                f"x kv_channels ({self.kv_channels})"
            )
        if sum((self.fp32, self.bf16, self.fp16)) > 1:
            raise ValueError("at most one of the precision flags fp32 / bf16 / fp16 may be true")
        # The flags (or the original's automatic choice) decide the default dtype; the checkpoint's stored
        # ``torch_dtype`` only describes how the weights were saved.
        self.dtype = self.default_dtype()

    def default_dtype(self) -> torch.dtype:
        """The dtype the model runs in when none is asked for: the precision flags, else the original's rule."""
        if self.fp32:
            return torch.float32
        if self.bf16:
            return torch.bfloat16
        if self.fp16:
            return torch.float16
        if torch.cuda.is_available():
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32

    @property
    def image_start_id(self) -> int:
        """Id of ``<img>``; ``</img>`` is the next id and ``<imgpad>`` the one after."""
        return int(self.visual["image_start_id"])


__all__ = ["QWenConfig"]
