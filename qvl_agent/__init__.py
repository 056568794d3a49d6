"""qvl_agent: a plugin-oriented multimodal agent framework built around the Qwen-VL vision-language model.

Public names are imported lazily so that ``import qvl_agent`` (and the CLI) stay fast and do not pull torch
until a model is needed.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "load_model": "qvl_agent.model",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'qvl_agent' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
