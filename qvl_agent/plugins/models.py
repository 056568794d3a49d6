"""Built-in model backends: the embedded demo model and local Qwen-VL checkpoint directories.

``resolve_model("demo")`` loads the embedded demo model with zoom refinement (``"demo-plain"``: its weights
alone; ``"zoom+SPEC"`` adds zoom refinement to any other spec); ``resolve_model("/path/to/Qwen-VL-Chat")`` loads
a checkpoint directory (a missing folder or missing weights is a clear error from ``load_model``). Both run on
the GPU when torch sees one, unless ``device`` says otherwise. Loaded models are cached per resolved path, device
and dtype, so the server, the console and several agents share one copy of the weights.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qvl_agent.hookspecs import hookimpl

_cache: dict[tuple[str, str, str | None], Any] = {}
_cache_lock = threading.Lock()
#: the zoom-refined demo backend of each cached plain one (so "demo" also resolves to one shared object)
_refined: dict[Any, Any] = {}


def is_checkpoint_dir(spec: str) -> bool:
    """True when ``spec`` is a local path (an existing directory, or anything written like a path such as
    ``./ckpt`` or ``/models/qwen``); loading then says clearly what is missing there."""
    if "://" in spec or "+" in spec.split("/", 1)[0]:
        return False
    if spec.startswith(("/", "./", "../", "~")) or os.sep in spec or "/" in spec:
        return True
    try:
        return Path(spec).expanduser().is_dir()
    except (OSError, ValueError):
        return False


def load_local_backend(spec: str, device: str = "auto", dtype: str | None = None) -> Any:
    """Build (once per path, device and dtype) a :class:`~qvl_agent.backends.LocalQwenBackend` for ``"demo"``
    or a directory. ``device``: ``"auto"`` (the GPU when present), ``"cpu"``, ``"cuda:1"`` …; ``dtype``:
    ``"fp32"`` / ``"bf16"`` / ``"fp16"`` (default: the checkpoint's precision flags)."""
    from qvl_agent.backends import LocalQwenBackend
    from qvl_agent.model.loading import resolve_device

    path = spec if spec == "demo" else str(Path(spec).expanduser().resolve())
    device_name = str(resolve_device(device))
    key = (path, device_name, dtype)
    with _cache_lock:
        backend = _cache.get(key)
        if backend is None:
            name = "demo" if spec == "demo" else Path(path).name
            backend = LocalQwenBackend.from_pretrained(path, name=name, device=device_name, dtype=dtype)
            _cache[key] = backend
    return backend


def load_demo_backend(spec: str = "demo", device: str = "auto", dtype: str | None = None) -> Any:
    """The embedded demo model as served everywhere: its weights (``demo-plain``) behind zoom refinement
    (:class:`~qvl_agent.zoom_refine.ZoomRefineBackend`: a second look at small boxes on an enlarged crop)."""
    from qvl_agent.zoom_refine import ZoomRefineBackend

    plain = load_local_backend("demo", device, dtype)
    if spec == "demo-plain":
        return plain
    with _cache_lock:
        return _refined.setdefault(plain, ZoomRefineBackend(plain))


def is_zoom_spec(spec: str) -> bool:
    """``zoom+SPEC``: any other model spec with zoom refinement added."""
    return spec.startswith("zoom+")


def load_zoom_backend(spec: str, **options: Any) -> Any:
    """``zoom+SPEC``: the backend ``SPEC`` resolves to, behind zoom refinement (``options`` go to it)."""
    from qvl_agent.model.errors import InputError
    from qvl_agent.plugins import resolve_model
    from qvl_agent.zoom_refine import ZoomRefineBackend

    if not spec.startswith("zoom+") or not spec[len("zoom+") :].strip():
        raise InputError(f"{spec!r}: write zoom+SPEC, SPEC being the model to refine (e.g. zoom+demo-plain)")
    return ZoomRefineBackend(resolve_model(spec[len("zoom+") :], **options))


@hookimpl
def register_models(register: Callable[..., None]) -> None:
    register("demo", load_demo_backend)
    register("demo-plain", load_demo_backend)
    register("zoom", load_zoom_backend, matches=is_zoom_spec)
    register("local-checkpoint", load_local_backend, matches=is_checkpoint_dir)
