"""Qwen-VL / Qwen-VL-Chat natively on transformers: configuration, modeling, tokenizer, chat, loading."""

from qvl_agent.model.loading import load_model

__all__ = ["load_model"]
