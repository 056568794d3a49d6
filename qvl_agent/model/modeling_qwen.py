"""Qwen-VL language model on transformers 5 (no remote code).

Parameter names are the official ones (``transformer.wte``, ``transformer.h.N.attn.c_attn`` ...,
``transformer.visual.*``, ``lm_head``), so released checkpoints load as they are.

Read top to bottom: RMSNorm -> rotary embedding -> attention -> MLP -> block -> ``QWenModel`` (embeddings,
image injection, blocks) -> ``QWenLMHeadModel`` (LM head, loss, generation hooks).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from qvl_agent.model.configuration_qwen import QWenConfig
from qvl_agent.model.errors import ContextLengthError, InputError
from qvl_agent.model.generation import QWenChatMixin
from qvl_agent.model.visual import QWenVisionTransformer

IMAGE_SPAN = 256  # slots between <img> and </img> in the released models (= the resampler's n_queries)


class QWenRMSNorm(nn.Module):
    """RMSNorm computed in float32, cast back, then scaled by the weight."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


def ntk_alpha_for_length(length: int, seq_length: int) -> float:
    """Dynamic-NTK factor of a prompt of ``length`` tokens: 1 up to ``seq_length``, then 3, 7, 15, ..."""
    context_value = math.log(length / seq_length, 2) + 1
    return max(2 ** math.ceil(context_value) - 1, 1)


class QWenRotaryEmbedding(nn.Module):
    """Rotary angles (rotate-half layout) in float32; ``ntk_alpha`` > 1 stretches the base (dynamic NTK)."""

    def __init__(self, dim: int, base: float = 10000):
        super().__init__()
        self.dim = dim
        self.base = base

    def forward(
        self, position_ids: torch.Tensor, ntk_alpha: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``position_ids`` [batch, seq] -> ``(cos, sin)`` each [batch, seq, 1, dim] in float32."""
        base = self.base * ntk_alpha ** (self.dim / (self.dim - 2))
        exponents = torch.arange(0, self.dim, 2, device=position_ids.device).float() / self.dim
        inv_freq = 1.0 / (base**exponents)
        freqs = position_ids.float()[..., None] * inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)[:, :, None, :]
        return emb.cos(), emb.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(t: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first ``cos.shape[-1]`` channels of ``t`` [batch, seq, heads, dim] in float32."""
    rot_dim = cos.shape[-1]
    t_rot, t_pass = t[..., :rot_dim].float(), t[..., rot_dim:].float()
    t_rot = t_rot * cos + rotate_half(t_rot) * sin
    return torch.cat((t_rot, t_pass), dim=-1).type_as(t)


def logn_scale(position_ids: torch.Tensor, seq_length: int) -> torch.Tensor:
    """Log-n query scale per position: ``log(p+1) / log(seq_length)`` past the training context, else 1."""
    n = position_ids.double() + 1
    scale = torch.where(n > seq_length, torch.log(n) / math.log(seq_length), torch.ones_like(n))
    return scale.float()


# torch sends masked bf16/fp16 attention on Hopper GPUs to cuDNN first, which builds an execution plan for
# every new key length -- at every decoding step. These kernels need no per-shape plan: the demo model in bf16
# on an H200 went from 1.24 to 0.32 s per held-out question with them (fp32, never sent to cuDNN: 0.14 s).
GPU_ATTENTION_KERNELS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


class QWenAttention(nn.Module):
    """Multi-head causal self-attention: fused ``c_attn`` (with bias) split [q|k|v], rotary, log-n, SDPA."""

    def __init__(self, config: QWenConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.head_dim = config.kv_channels
        self.hidden_size = config.hidden_size
        self.scale = self.head_dim**-0.5 if config.scale_attn_weights else 1.0
        self.dropout = config.attn_dropout_prob
        self.c_attn = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.c_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=not config.no_bias)

    def forward(
        self,
        hidden_states: torch.Tensor,
        rotary: tuple[torch.Tensor, torch.Tensor],
        query_scale: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        cache: Cache | None,
    ) -> torch.Tensor:
        batch, seq, _ = hidden_states.shape
        query, key, value = self.c_attn(hidden_states).split(self.hidden_size, dim=2)
        query = query.view(batch, seq, self.num_heads, self.head_dim)
        key = key.view(batch, seq, self.num_heads, self.head_dim)
        value = value.view(batch, seq, self.num_heads, self.head_dim)

        cos, sin = rotary
        query = apply_rotary(query, cos, sin)
        key = apply_rotary(key, cos, sin)
        if query_scale is not None:
            query = query * query_scale[:, :, None, None].type_as(query)

        # [batch, heads, seq, head_dim] from here on (the layout of transformers' caches)
        query, key, value = (t.transpose(1, 2) for t in (query, key, value))
        if cache is not None:
            key, value = cache.update(key, value, self.layer_idx)

        with sdpa_kernel(GPU_ATTENTION_KERNELS) if query.is_cuda else contextlib.nullcontext():
            out = F.scaled_dot_product_attention(
                query,
                key,
                value,
                attn_mask=attention_mask,
                dropout_p=self.dropout if self.training else 0.0,
                is_causal=attention_mask is None and seq > 1,
                scale=self.scale,
            )
        out = out.transpose(1, 2).reshape(batch, seq, self.hidden_size)
        return self.c_proj(out)


class QWenMLP(nn.Module):
    """SwiGLU: ``c_proj(w1(x) * silu(w2(x)))`` -- the SiLU is on ``w2``; each branch is intermediate_size/2."""

    def __init__(self, config: QWenConfig):
        super().__init__()
        inner = config.intermediate_size // 2
        self.w1 = nn.Linear(config.hidden_size, inner, bias=not config.no_bias)
        self.w2 = nn.Linear(config.hidden_size, inner, bias=not config.no_bias)
        self.c_proj = nn.Linear(inner, config.hidden_size, bias=not config.no_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.w1(x) * F.silu(self.w2(x)))


class QWenBlock(GradientCheckpointingLayer):
    """Pre-norm decoder block: x + attn(ln_1(x)), then + mlp(ln_2(.))."""

    def __init__(self, config: QWenConfig, layer_idx: int):
        super().__init__()
        self.ln_1 = QWenRMSNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.attn = QWenAttention(config, layer_idx)
        self.ln_2 = QWenRMSNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.mlp = QWenMLP(config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        rotary: tuple[torch.Tensor, torch.Tensor],
        query_scale: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
    ) -> torch.Tensor:
        hidden_states = hidden_states + self.attn(
            self.ln_1(hidden_states), rotary, query_scale, attention_mask, cache
        )
        return hidden_states + self.mlp(self.ln_2(hidden_states))


class QWenPreTrainedModel(PreTrainedModel):
    config_class = QWenConfig
    base_model_prefix = "transformer"
    supports_gradient_checkpointing = True
    _no_split_modules = ["QWenBlock", "QWenVisionTransformer"]
    _supports_sdpa = True
    _keys_to_ignore_on_load_unexpected = [r"\.rotary_emb\.inv_freq$"]

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, QWenVisionTransformer):
            module.reset_parameters()  # the vision tower's own scheme (sin-cos tables, scaled projections)
        else:
            super()._init_weights(module)


def find_image_spans(
    input_ids: torch.Tensor, image_start_id: int, span_length: int = IMAGE_SPAN
) -> list[tuple[int, int, int]]:
    """``(row, start, end)`` of every ``<img> ... </img>`` span, row-major; malformed spans (or spans without
    exactly ``span_length`` slots) raise InputError."""
    starts = (input_ids == image_start_id).nonzero().tolist()
    ends = (input_ids == image_start_id + 1).nonzero().tolist()
    if len(starts) != len(ends) or any(
        s[0] != e[0] or e[1] <= s[1] for s, e in zip(starts, ends, strict=True)
    ):
        raise InputError(
            f"unbalanced image tags: {len(starts)} <img> (id {image_start_id}) and {len(ends)} </img> "
            f"(id {image_start_id + 1}) in input_ids, or a </img> before its <img>"
        )
    spans = []
    for (row, start), (_, end) in zip(starts, ends, strict=True):
        if end - start - 1 != span_length:
            raise InputError(
                f"image span at row {row}, position {start} holds {end - start - 1} tokens between <img> and "
                f"</img>; the model needs exactly {span_length} (use the Qwen tokenizer to encode <img>...</img>)"
            )
        spans.append((row, start, end))
    return spans


def image_reference(span_ids: Sequence[int], pad_id: int) -> str:
    """The path/URL written inside an image span: its ids are raw UTF-8 bytes, padded with ``<imgpad>``."""
    data = []
    for token in span_ids:
        if token == pad_id:
            break
        if not 0 <= token < 256:
            raise InputError(
                f"image span holds token id {token}; only byte ids 0-255 then <imgpad> may appear"
            )
        data.append(token)
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(
            f"image reference inside <img>...</img> is not valid UTF-8: {bytes(data)!r}"
        ) from err


class QWenModel(QWenPreTrainedModel):
    """The decoder stack with the vision tower: token embeddings, image features spliced in, blocks, ``ln_f``.

    Positions: rotary angles and log-n scales use ``position_ids`` (from ``attention_mask`` when given, so left
    padding does not shift them). This deliberately fixes quirk 3 of the original (positions from the cache
    length, ignoring padding); for unpadded input both give 0, 1, 2, ... so the reference outputs are unchanged.
    """

    def __init__(self, config: QWenConfig):
        super().__init__(config)
        self.wte = nn.Embedding(config.vocab_size, config.hidden_size)
        self.drop = nn.Dropout(config.emb_dropout_prob)
        rotary_dim = int(config.kv_channels * config.rotary_pct)
        self.rotary_emb = QWenRotaryEmbedding(rotary_dim, base=config.rotary_emb_base)
        self.h = nn.ModuleList([QWenBlock(config, i) for i in range(config.num_hidden_layers)])
        self.ln_f = QWenRMSNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.visual = QWenVisionTransformer.from_config(config.visual)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.wte

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.wte = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        past_key_values: Cache | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        images: Sequence[Any] | None = None,
        pixel_values: torch.Tensor | None = None,
        use_cache: bool | None = None,
        cache: Cache | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPast:
        past_key_values = past_key_values if past_key_values is not None else cache
        if (input_ids is None) == (inputs_embeds is None):
            raise InputError("pass exactly one of input_ids or inputs_embeds")
        if input_ids is not None and input_ids.dim() != 2:
            raise InputError(f"input_ids must be [batch, seq]; got shape {tuple(input_ids.shape)}")
        use_cache = use_cache if use_cache is not None else (self.config.use_cache and not self.training)
        if use_cache and past_key_values is None:
            past_key_values = DynamicCache()
        past_length = past_key_values.get_seq_length() if past_key_values is not None else 0
        seq = (input_ids if input_ids is not None else inputs_embeds).shape[1]
        if past_length == 0 and seq > self.config.max_position_embeddings:
            raise ContextLengthError(
                f"the prompt is {seq} tokens long but the model's context holds at most "
                f"{self.config.max_position_embeddings} (max_position_embeddings; trained on "
                f"seq_length={self.config.seq_length})"
            )

        if inputs_embeds is None:
            if input_ids.numel() and (input_ids.min() < 0 or input_ids.max() >= self.config.vocab_size):
                raise InputError(
                    f"input_ids must lie in [0, {self.config.vocab_size}); got {input_ids.min()}..{input_ids.max()}"
                )
            inputs_embeds = self.wte(input_ids)
        batch, seq = inputs_embeds.shape[:2]
        hidden_states = self.drop(inputs_embeds)

        # Images go in at prefill only: with a cache their features already live in the cached keys/values.
        if past_length == 0 and input_ids is not None:
            hidden_states = self._inject_images(hidden_states, input_ids, images, pixel_values)
        elif past_length == 0 and (images is not None or pixel_values is not None):
            raise InputError(
                "images / pixel_values need input_ids holding <img>...</img> spans, not inputs_embeds"
            )

        if position_ids is None:
            if attention_mask is not None:
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -seq:]
            else:
                position_ids = torch.arange(past_length, past_length + seq, device=hidden_states.device)[None]
            position_ids = position_ids.expand(batch, seq)

        ntk_alpha = self._ntk_alpha(past_key_values, past_length, seq, attention_mask)
        rotary = self.rotary_emb(position_ids, ntk_alpha)
        query_scale = None
        if self.config.use_logn_attn and not self.training:
            query_scale = logn_scale(position_ids, self.config.seq_length)
        mask = self._attention_mask(attention_mask, batch, seq, past_length, hidden_states)

        for block in self.h:
            hidden_states = block(hidden_states, rotary, query_scale, mask, past_key_values)
        hidden_states = self.ln_f(hidden_states)
        return BaseModelOutputWithPast(last_hidden_state=hidden_states, cache=past_key_values)

    def _ntk_alpha(
        self, cache: Cache | None, past_length: int, seq: int, attention_mask: torch.Tensor | None
    ) -> float:
        """Dynamic NTK: chosen from the prompt length at prefill and reused (stored on the cache) while decoding.

        A padded batch uses its longest real prompt (the original picks one alpha per row).
        """
        if self.training or not self.config.use_dynamic_ntk:
            return 1.0
        if past_length > 0 and hasattr(cache, "qwen_ntk_alpha"):
            return cache.qwen_ntk_alpha
        length = past_length + seq
        if attention_mask is not None and attention_mask.shape[-1] == length:
            length = int(attention_mask.sum(-1).max())
        alpha = ntk_alpha_for_length(max(length, 1), self.config.seq_length)
        if cache is not None:
            cache.qwen_ntk_alpha = alpha
        return alpha

    @staticmethod
    def _attention_mask(
        attention_mask: torch.Tensor | None, batch: int, seq: int, past_length: int, like: torch.Tensor
    ) -> torch.Tensor | None:
        """Additive [batch, 1, seq, past+seq] mask (``finfo.min`` where masked), or None for plain causal."""
        total = past_length + seq
        if attention_mask is not None and attention_mask.dim() == 4:
            return attention_mask
        if attention_mask is not None and attention_mask.shape != (batch, total):
            raise InputError(
                f"attention_mask must be [batch, past + new tokens] = [{batch}, {total}]; "
                f"got {list(attention_mask.shape)}"
            )
        padded = attention_mask is not None and not bool(attention_mask.all())
        if not padded and (past_length == 0 or seq == 1):
            return None  # SDPA's is_causal (prefill) or nothing to mask (one new token)
        if past_length == 0 and bool((attention_mask[:, 1:] <= attention_mask[:, :-1]).all()):
            # Right padding only (training batches): causal attention never lets a real token see the
            # padding after it, so is_causal gives the real positions exactly the same result and lets
            # SDPA skip the masked half instead of reading a full [seq, seq] mask.
            return None
        return QWenModel.causal_padding_mask(attention_mask, batch, seq, past_length, like)

    @staticmethod
    def causal_padding_mask(
        attention_mask: torch.Tensor | None, batch: int, seq: int, past_length: int, like: torch.Tensor
    ) -> torch.Tensor:
        """The explicit additive [batch, 1, seq, past+seq] mask: causal, and padding (``attention_mask`` 0)
        masked with ``finfo.min`` in ``like``'s dtype."""
        total = past_length + seq
        query_pos = torch.arange(past_length, total, device=like.device)[:, None]
        allowed = (torch.arange(total, device=like.device)[None, :] <= query_pos)[None, None]
        if attention_mask is not None:
            allowed = allowed & attention_mask[:, None, None, -total:].bool()
        allowed = allowed.expand(batch, 1, seq, total)
        zero = torch.zeros((), dtype=like.dtype, device=like.device)
        return torch.where(allowed, zero, torch.finfo(like.dtype).min)

    def _inject_images(
        self,
        hidden_states: torch.Tensor,
        input_ids: torch.Tensor,
        images: Sequence[Any] | None,
        pixel_values: torch.Tensor | None,
    ) -> torch.Tensor:
        """Overwrite the ``n_queries`` (256 in the released models) slots of every ``<img>`` span with that
        image's features (row-major order).

        The pictures come from ``pixel_values``, else ``images`` (PIL images / paths / URLs), else the reference
        written inside each span (the original way).
        """
        start_id = self.config.image_start_id
        spans = find_image_spans(input_ids, start_id, self.visual.n_queries)
        given = pixel_values if pixel_values is not None else images
        if given is not None and len(given) != len(spans):
            kind = "pixel_values" if pixel_values is not None else "images"
            raise InputError(
                f"{len(given)} {kind} given but the prompt holds {len(spans)} <img>...</img> span(s); "
                "pass one picture per span, in order"
            )
        if not spans:
            return hidden_states

        if pixel_values is not None:
            features = self.visual(pixel_values)
        else:
            if images is None:
                images = [
                    image_reference(input_ids[row, start + 1 : end].tolist(), start_id + 2)
                    for row, start, end in spans
                ]
            features = self.visual.encode(list(images))

        hidden_states = hidden_states.clone()
        for (row, start, end), feature in zip(spans, features, strict=True):
            hidden_states[row, start + 1 : end] = feature.to(hidden_states.dtype)
        return hidden_states


class QWenLMHeadModel(QWenChatMixin, QWenPreTrainedModel, GenerationMixin):
    """Qwen-VL with its (untied) LM head: ``forward``, ``generate`` (images at prefill), ``chat``/``chat_stream``."""

    def __init__(self, config: QWenConfig):
        super().__init__(config)
        self.transformer = QWenModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.transformer.wte

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.transformer.wte = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        past_key_values: Cache | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        images: Sequence[Any] | None = None,
        pixel_values: torch.Tensor | None = None,
        use_cache: bool | None = None,
        cache: Cache | None = None,
        logits_to_keep: int = 0,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        """Logits for every position (or the last ``logits_to_keep``); with ``labels`` the shifted causal-LM loss
        (label -100 is ignored). ``images`` / ``pixel_values`` fill the ``<img>`` spans in order (see QWenModel).
        """
        outputs = self.transformer(
            input_ids=input_ids,
            attention_mask=attention_mask,
            past_key_values=past_key_values if past_key_values is not None else cache,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            images=images,
            pixel_values=pixel_values,
            use_cache=use_cache,
        )
        hidden_states = outputs.last_hidden_state
        if logits_to_keep:
            hidden_states = hidden_states[:, -logits_to_keep:]
        logits = self.lm_head(hidden_states)

        loss = None
        if labels is not None:
            shift_logits = logits[:, :-1].float().reshape(-1, logits.shape[-1])
            shift_labels = labels[:, 1:].to(logits.device).reshape(-1)
            loss = F.cross_entropy(shift_logits, shift_labels, ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=logits, cache=outputs.cache)

    def prepare_inputs_for_generation(
        self, input_ids: torch.LongTensor, *args: Any, is_first_iteration: bool | None = False, **kwargs: Any
    ) -> dict[str, Any]:
        """As transformers does, but ``images`` / ``pixel_values`` travel with the prefill step only."""
        images = kwargs.pop("images", None)
        pixel_values = kwargs.pop("pixel_values", None)
        model_inputs = super().prepare_inputs_for_generation(
            input_ids, *args, is_first_iteration=is_first_iteration, **kwargs
        )
        cache = model_inputs.get("cache")
        prefill = cache is None or cache.get_seq_length() == 0
        if prefill:
            model_inputs["images"] = images
            model_inputs["pixel_values"] = pixel_values
        else:
            model_inputs.pop("images", None)
            model_inputs.pop("pixel_values", None)
        return model_inputs


__all__ = ["QWenLMHeadModel", "QWenModel", "QWenPreTrainedModel"]
