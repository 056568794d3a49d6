"""The built-in register_models plugin: which specs it claims and the errors for bad ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from qvl_agent import plugins
from qvl_agent.model.errors import InputError
from qvl_agent.plugins.models import is_checkpoint_dir


def test_which_specs_are_local_checkpoints(tmp_path: Path) -> None:
    assert is_checkpoint_dir(str(tmp_path))
    assert is_checkpoint_dir("./some/folder") and is_checkpoint_dir("/models/qwen-vl")
    assert not is_checkpoint_dir("openai+http://127.0.0.1:8000/v1")
    assert not is_checkpoint_dir("https://example.com/model")
    assert not is_checkpoint_dir("gpt-4o")


def test_registered_names(plugin_manager) -> None:
    names = {r.name for r in plugins.get_models() if r.plugin == "qvl_agent.plugins.models"}
    assert names == {"demo", "local-checkpoint"}


def test_missing_or_empty_folders_are_clear_errors(plugin_manager, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no checkpoint folder"):
        plugins.resolve_model(str(tmp_path / "missing"))
    with pytest.raises(InputError, match="config.json"):
        plugins.resolve_model(str(tmp_path))
