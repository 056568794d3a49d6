"""Loading Qwen-VL checkpoints from local folders, and registering our classes with transformers' Auto classes.

A checkpoint folder holds ``config.json``, ``qwen.tiktoken``, optionally ``generation_config.json`` and the
weights in any layout transformers reads: ``model.safetensors``, sharded safetensors with
``model.safetensors.index.json``, ``pytorch_model.bin`` or sharded ``.bin`` with its index (read with
``torch.load(weights_only=True)``). The original's ``*.py`` files and ``auto_map`` entries, present in downloaded
checkpoints, are ignored: nothing from the folder is ever imported or executed by ``load_model``, nor by the
Auto classes as long as ``trust_remote_code`` is not set. (With an explicit ``trust_remote_code=True``,
``AutoConfig``/``AutoModel*`` still use our registered classes, but transformers' ``AutoTokenizer`` would import
the folder's ``tokenization_qwen.py`` -- so don't pass it; it is never needed.)
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

from qvl_agent.model.configuration_qwen import QWenConfig
from qvl_agent.model.errors import InputError
from qvl_agent.model.modeling_qwen import QWenLMHeadModel, QWenModel
from qvl_agent.model.tokenization_qwen import QWenTokenizer

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
DTYPE_NAMES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
}


class CheckpointNotFoundError(InputError, FileNotFoundError):
    """A checkpoint folder, or a file it must hold, is missing."""


def register_auto_classes() -> None:
    """Make ``AutoConfig`` / ``AutoModel`` / ``AutoModelForCausalLM`` / ``AutoTokenizer`` return our classes for
    ``model_type == "qwen"``, without ``trust_remote_code``. Safe to call more than once."""
    AutoConfig.register("qwen", QWenConfig, exist_ok=True)
    AutoModel.register(QWenConfig, QWenModel, exist_ok=True)
    AutoModelForCausalLM.register(QWenConfig, QWenLMHeadModel, exist_ok=True)
    AutoTokenizer.register(QWenConfig, tokenizer_class=QWenTokenizer, exist_ok=True)


def demo_checkpoint_dir() -> Path:
    """Where the embedded demo model lives (package data ``qvl_agent/assets/demo/``)."""
    return Path(str(resources.files("qvl_agent"))) / "assets" / "demo"


def resolve_checkpoint(path_or_name: str | os.PathLike[str]) -> Path:
    """The checkpoint folder for a name (``"demo"``) or a local path; raise CheckpointNotFoundError if unusable."""
    if str(path_or_name) == "demo":
        path = demo_checkpoint_dir()
        if not (path / "config.json").is_file():
            raise CheckpointNotFoundError(
                f"the embedded demo model is not installed: no config.json in {path}. It is package data "
                "trained in this repository; train it first, or pass the path of a local Qwen-VL checkpoint folder"
            )
    else:
        path = Path(path_or_name).expanduser()
        if not path.is_dir():
            raise CheckpointNotFoundError(
                f"no checkpoint folder at {str(path)!r}: pass a local directory holding config.json, qwen.tiktoken "
                "and the weights (checkpoints are never downloaded)"
            )
    missing = [name for name in ("config.json", "qwen.tiktoken") if not (path / name).is_file()]
    if missing:
        raise CheckpointNotFoundError(f"checkpoint folder {str(path)!r} has no {' or '.join(missing)}")
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        raise CheckpointNotFoundError(
            f"checkpoint folder {str(path)!r} holds no weights: expected one of {', '.join(WEIGHT_FILES)}"
        )
    return path


def _as_dtype(dtype: str | torch.dtype | None) -> torch.dtype | str:
    if dtype is None:
        return "auto"  # QWenConfig turns the fp32/bf16/fp16 flags into the default
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return dtype
    if dtype not in DTYPE_NAMES:
        raise InputError(
            f"unknown dtype {dtype!r}: use one of {', '.join(sorted(DTYPE_NAMES))} or a torch.dtype"
        )
    return DTYPE_NAMES[dtype]


def load_model(
    path_or_name: str | os.PathLike[str] = "demo",
    *,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
) -> tuple[QWenLMHeadModel, QWenTokenizer]:
    """Load a Qwen-VL checkpoint folder (or ``"demo"``, the embedded demo model) in eval mode.

    ``dtype``: a torch dtype or ``"fp32"``/``"bf16"``/``"fp16"``; by default the config's precision flags (fp32
    on a CPU-only machine when none is set). ``device``: where to put the model (default CPU).
    """
    path = resolve_checkpoint(path_or_name)
    model = QWenLMHeadModel.from_pretrained(path, dtype=_as_dtype(dtype), local_files_only=True)
    if device is not None:
        model.to(device)
    model.eval()
    tokenizer = QWenTokenizer.from_pretrained(path, local_files_only=True)
    return model, tokenizer


__all__ = [
    "CheckpointNotFoundError",
    "demo_checkpoint_dir",
    "load_model",
    "register_auto_classes",
    "resolve_checkpoint",
]
