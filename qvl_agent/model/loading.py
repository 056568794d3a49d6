"""Loading Qwen-VL checkpoints from local folders, and registering our classes with transformers' Auto classes.

A checkpoint folder holds ``config.json``, ``qwen.tiktoken``, optionally ``generation_config.json`` and the
weights in any layout transformers reads: ``model.safetensors``, sharded safetensors with
``model.safetensors.index.json``, ``pytorch_model.bin`` or sharded ``.bin`` with its index (read with
``torch.load(weights_only=True)``). The original's ``*.py`` files and ``auto_map`` entries, present in downloaded
checkpoints, are ignored: nothing from the folder is ever imported or executed by ``load_model``, nor by the
Auto classes as long as ``trust_remote_code`` is not set. (With an explicit ``trust_remote_code=True``,
``AutoConfig``/``AutoModel*`` still use our registered classes, but transformers' ``AutoTokenizer`` would import
the folder's ``tokenization_qwen.py`` -- so don't pass it; it is never needed.)

A LoRA adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``, as ``qvl-agent train --lora
--no-merge`` writes) loads too: its base checkpoint is loaded and the adapter merged into it (needs ``peft``).
"""

from __future__ import annotations

import json
import os
import pickle
from importlib import resources
from pathlib import Path

import torch
from safetensors import SafetensorError
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


class CheckpointLoadError(InputError):
    """A checkpoint folder is there but unusable: not a Qwen-VL config, unreadable or incomplete weights."""


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
    _check_model_type(path)
    return path


def _check_model_type(path: Path) -> None:
    """Refuse a config.json that is not JSON or describes another architecture (e.g. Qwen2-VL)."""
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointLoadError(f"cannot read {str(path / 'config.json')!r}: {err}") from None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type != "qwen":
        raise CheckpointLoadError(
            f"{str(path / 'config.json')!r} has model_type {model_type!r}: qvl_agent loads the 2023 Qwen-VL / "
            "Qwen-VL-Chat (model_type 'qwen'); Qwen2-VL and later are other architectures"
        )


def resolve_device(device: str | torch.device) -> torch.device:
    """A torch device from a name: ``"auto"`` (the GPU when torch sees one, else the CPU), ``"cpu"``,
    ``"cuda"``, ``"cuda:1"`` … Raises :class:`InputError` for an unknown name or CUDA that is not there."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise InputError(f"unknown device {device!r}: {err}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {str(device)!r} asked for, but CUDA is not available to this torch build")
    return device


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
    on a CPU-only machine when none is set). ``device``: where to put the model (default CPU; ``"auto"``: the
    GPU when present).

    Raises :class:`CheckpointNotFoundError` for a missing folder/file and :class:`CheckpointLoadError` for a
    folder that is not a Qwen-VL checkpoint (other ``model_type``), has unreadable weights, or weights that are
    missing or shaped unlike its config -- never a silently half-initialised model.
    A LoRA adapter folder gives its base checkpoint with the adapter merged in.
    """
    if str(path_or_name) != "demo" and is_adapter_folder(path_or_name):
        return _load_adapter(Path(path_or_name).expanduser(), dtype=dtype, device=device)
    path = resolve_checkpoint(path_or_name)
    torch_dtype = _as_dtype(dtype)
    target = resolve_device(device) if device is not None else None
    try:
        model, info = QWenLMHeadModel.from_pretrained(
            path,
            dtype=torch_dtype,
            local_files_only=True,
            output_loading_info=True,
            ignore_mismatched_sizes=True,
        )
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError, SafetensorError) as err:
        if isinstance(err, InputError):
            raise
        raise CheckpointLoadError(
            f"cannot load the weights of checkpoint folder {str(path)!r}: {_one_line(err)}"
        ) from err
    mismatched = sorted(info["mismatched_keys"])
    if mismatched:
        name, stored, expected = mismatched[0]
        raise CheckpointLoadError(
            f"checkpoint folder {str(path)!r} does not match its config.json: {len(mismatched)} weight(s) have "
            f"other shapes, e.g. {name} is {list(stored)} in the checkpoint but the config needs {list(expected)}"
        )
    missing = sorted(info["missing_keys"])
    if missing:
        raise CheckpointLoadError(
            f"checkpoint folder {str(path)!r} lacks {len(missing)} weight(s) the model needs, e.g. "
            f"{', '.join(missing[:3])} (a text-only Qwen checkpoint has no transformer.visual.* weights)"
        )
    if target is not None:
        model.to(target)
    model.eval()
    tokenizer = QWenTokenizer.from_pretrained(path, local_files_only=True)
    n_queries = model.transformer.visual.n_queries
    if tokenizer.image_span != n_queries:
        raise CheckpointLoadError(
            f"{path}: the tokenizer writes {tokenizer.image_span} slots per <img> span but the model's resampler "
            f"has {n_queries} queries; set image_span={n_queries} in tokenizer_config.json"
        )
    return model, tokenizer


def _one_line(err: BaseException) -> str:
    """``Type: first line of the message`` of an exception, for one-line error messages."""
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0] if text else 'no details'}"


def is_adapter_folder(path: str | os.PathLike[str]) -> bool:
    """True for a LoRA adapter folder (``adapter_config.json``, no ``config.json``): ``final/`` of ``--no-merge``."""
    path = Path(path).expanduser()
    return (path / "adapter_config.json").is_file() and not (path / "config.json").is_file()


def _load_adapter(path: Path, **options) -> tuple[QWenLMHeadModel, QWenTokenizer]:
    """The adapter's base checkpoint with the adapter merged in (eval mode).

    The base is ``base_model_name_or_path`` of ``adapter_config.json``: absolute, or relative to the working
    directory or to the adapter folder.
    """
    try:
        base = json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))[
            "base_model_name_or_path"
        ]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointLoadError(f"{str(path)!r}: not a readable LoRA adapter folder ({exc})") from None
    candidates = [Path(base)] if Path(base).is_absolute() else [Path(base), path / base]
    found = next((c for c in candidates if (c / "config.json").is_file()), None)
    if found is None:
        raise CheckpointNotFoundError(
            f"{str(path)!r}: the adapter's base checkpoint {base!r} is not a checkpoint folder here"
        )
    try:
        from peft import PeftModel
    except ImportError:
        raise CheckpointLoadError(
            f"{str(path)!r} is a LoRA adapter folder: loading it needs peft (pip install 'qvl-agent[train]')"
        ) from None
    model, tokenizer = load_model(found, **options)
    try:
        adapted = PeftModel.from_pretrained(model, str(path))
    except (OSError, RuntimeError, ValueError, KeyError, SafetensorError) as err:
        raise CheckpointLoadError(
            f"cannot apply the LoRA adapter {str(path)!r} to {str(found)!r}: {_one_line(err)}"
        ) from err
    return adapted.merge_and_unload().eval(), tokenizer


__all__ = [
    "CheckpointLoadError",
    "CheckpointNotFoundError",
    "demo_checkpoint_dir",
    "is_adapter_folder",
    "load_model",
    "register_auto_classes",
    "resolve_checkpoint",
]
