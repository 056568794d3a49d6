"""qvl_agent: a plugin-oriented multimodal agent framework built around the Qwen-VL vision-language model.

Importing the package registers the Qwen-VL classes with transformers' Auto classes, so that
``AutoConfig`` / ``AutoModelForCausalLM`` / ``AutoTokenizer.from_pretrained(checkpoint_dir)`` return ours
(never the checkpoint's remote code). The other public names are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

import qvl_agent.model  # noqa: F401  (registers the Auto classes)
from qvl_agent.hookspecs import hookimpl
from qvl_agent.model import load_model

# public name -> module that defines it (imported lazily)
_LAZY_EXPORTS: dict[str, str] = {
    "Agent": "qvl_agent.agent",
    "AgentResult": "qvl_agent.agent",
    "Tool": "qvl_agent.tools",
    "ToolResult": "qvl_agent.tools",
    "Message": "qvl_agent.messages",
    "ImagePart": "qvl_agent.messages",
    "TextPart": "qvl_agent.messages",
    "Box": "qvl_agent.messages",
    "FunctionSpec": "qvl_agent.messages",
    "GenerationRequest": "qvl_agent.messages",
    "GenerationResult": "qvl_agent.messages",
    "ModelBackend": "qvl_agent.backends",
    "FunctionCallProtocol": "qvl_agent.protocols",
}

__all__ = ["hookimpl", "load_model", *_LAZY_EXPORTS]  # noqa: PLE0604


def __getattr__(name: str) -> Any:
    module = _LAZY_EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'qvl_agent' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
