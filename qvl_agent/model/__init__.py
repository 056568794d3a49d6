"""Qwen-VL / Qwen-VL-Chat natively on transformers: configuration, modeling, tokenizer, chat, loading.

Importing this package registers the classes with transformers' Auto classes (``model_type == "qwen"``), so
``AutoModelForCausalLM.from_pretrained(folder)`` works without ``trust_remote_code``.
"""

from qvl_agent.model.configuration_qwen import QWenConfig
from qvl_agent.model.errors import ContextLengthError, ImageLoadError, InputError
from qvl_agent.model.generation import StopWordsLogitsProcessor
from qvl_agent.model.loading import (
    CheckpointLoadError,
    CheckpointNotFoundError,
    load_model,
    register_auto_classes,
)
from qvl_agent.model.modeling_qwen import QWenLMHeadModel, QWenModel, QWenPreTrainedModel
from qvl_agent.model.tokenization_qwen import QWenTokenizer

register_auto_classes()

__all__ = [
    "CheckpointLoadError",
    "CheckpointNotFoundError",
    "ContextLengthError",
    "ImageLoadError",
    "InputError",
    "QWenConfig",
    "QWenLMHeadModel",
    "QWenModel",
    "QWenPreTrainedModel",
    "QWenTokenizer",
    "StopWordsLogitsProcessor",
    "load_model",
    "register_auto_classes",
]
