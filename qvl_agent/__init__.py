"""qvl_agent: a plugin-oriented multimodal agent framework built around the Qwen-VL vision-language model."""

from qvl_agent.model import load_model

__all__ = ["load_model"]
