"""The built-in register_models plugin: which specs it claims and the errors for bad ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from qvl_agent import plugins
from qvl_agent.hookspecs import hookimpl
from qvl_agent.model.errors import InputError
from qvl_agent.plugins.models import is_checkpoint_dir
from qvl_agent.testing import ScriptedBackend


def test_which_specs_are_local_checkpoints(tmp_path: Path) -> None:
    assert is_checkpoint_dir(str(tmp_path))
    assert is_checkpoint_dir("./some/folder") and is_checkpoint_dir("/models/qwen-vl")
    assert not is_checkpoint_dir("openai+http://127.0.0.1:8000/v1")
    assert not is_checkpoint_dir("https://example.com/model")
    assert not is_checkpoint_dir("gpt-4o")


def test_registered_names(plugin_manager) -> None:
    names = {r.name for r in plugins.get_models() if r.plugin == "qvl_agent.plugins.models"}
    assert names == {"demo", "demo-plain", "zoom", "local-checkpoint"}


def test_demo_is_the_weights_behind_zoom_refinement_and_zoom_wraps_any_spec(plugin_manager) -> None:
    from qvl_agent.backends import LocalQwenBackend
    from qvl_agent.zoom_refine import ZoomRefineBackend

    demo, plain = plugins.resolve_model("demo"), plugins.resolve_model("demo-plain")
    assert isinstance(demo, ZoomRefineBackend) and isinstance(plain, LocalQwenBackend)
    assert demo.inner is plain and demo.name == plain.name == "demo"
    wrapped = plugins.resolve_model("zoom+demo-plain", device="auto")
    assert isinstance(wrapped, ZoomRefineBackend) and wrapped.inner is plain
    with pytest.raises(InputError, match="no plugin provides a model for 'nothing-here'"):
        plugins.resolve_model("zoom+nothing-here")
    for bare in ("zoom", "zoom+"):
        with pytest.raises(InputError, match="write zoom\\+SPEC"):
            plugins.resolve_model(bare)


def test_missing_or_empty_folders_are_clear_errors(plugin_manager, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no checkpoint folder"):
        plugins.resolve_model(str(tmp_path / "missing"))
    with pytest.raises(InputError, match="config.json"):
        plugins.resolve_model(str(tmp_path))


def test_device_and_dtype_reach_the_local_model_and_key_the_cache(plugin_manager) -> None:
    import torch

    default = plugins.resolve_model("demo-plain")
    assert plugins.resolve_model("demo") is plugins.resolve_model("demo")
    auto_device = "cuda" if torch.cuda.is_available() else "cpu"
    assert default.model.device.type == auto_device  # "auto": the GPU when torch sees one
    assert plugins.resolve_model("demo-plain", device="auto") is default  # one copy per (path, device, dtype)
    half = plugins.resolve_model("demo", device="cpu", dtype="bf16")
    assert half is not default
    assert half.model.device.type == "cpu" and half.model.dtype == torch.bfloat16
    assert plugins.resolve_model("demo", dtype="bf16", device="cpu") is half


def test_bad_device_or_dtype_is_a_clear_error(plugin_manager) -> None:
    with pytest.raises(InputError, match="unknown device 'gpu0'"):
        plugins.resolve_model("demo", device="gpu0")
    with pytest.raises(InputError, match="unknown dtype 'int3'"):
        plugins.resolve_model("demo", device="cpu", dtype="int3")


def test_options_for_a_model_that_takes_none_are_named(plugin_manager) -> None:
    with pytest.raises(InputError, match=r"takes no device option: those apply to models that run in this"):
        plugins.resolve_model("openai+http://127.0.0.1:9/v1", device="cuda")


def test_drop_unaccepted_gives_a_factory_only_the_options_it_takes(plugin_manager) -> None:
    seen: list[dict] = []

    class Plugin:
        @hookimpl
        def register_models(self, register):
            def factory(spec: str, device: str = "auto"):
                seen.append({"device": device})
                return ScriptedBackend("ok")

            register("placed", factory)

    plugin_manager.register(Plugin(), name="placed-model")
    remote = plugins.resolve_model("openai+http://127.0.0.1:9/v1", drop_unaccepted=True, device="cuda")
    assert remote.name == "upstream@127.0.0.1:9"  # built without the device option it does not take
    plugins.resolve_model("placed", drop_unaccepted=True, device="cpu", dtype="bf16")
    assert seen == [{"device": "cpu"}]  # device kept, dtype dropped
    with pytest.raises(InputError, match="takes no dtype option"):
        plugins.resolve_model("placed", device="cpu", dtype="bf16")
