"""``--device`` / ``--dtype`` of the commands that load a model: they reach the local model, and bad values
are one clear line."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from qvl_agent.cli import main
from qvl_agent.testing import cli_error_line


@pytest.mark.parametrize(
    "command",
    [
        ["serve"],
        ["console"],
        ["chat", "hello"],
        ["eval", "--task", "vqa", "--limit", "1", "--n-samples", "2", "--quiet"],
    ],
)
def test_unknown_device_or_dtype_is_one_line(command, plugin_manager):
    assert "unknown device 'gpu0'" in cli_error_line(CliRunner().invoke(main, [*command, "--device", "gpu0"]))
    result = CliRunner().invoke(main, [*command, "--dtype", "int3"])
    assert result.exit_code == 2 and "'int3' is not one of 'fp32', 'bf16', 'fp16'" in result.output


def test_serve_puts_the_demo_model_where_it_is_told(plugin_manager, monkeypatch):
    runs = []
    monkeypatch.setattr("uvicorn.run", lambda app, **kwargs: runs.append(app))
    result = CliRunner().invoke(main, ["serve", "--device", "cpu", "--dtype", "bf16"])
    assert result.exit_code == 0, result.output
    model = runs[0].state.service.backend.model
    assert model.device.type == "cpu" and model.dtype == torch.bfloat16


def test_eval_on_a_chosen_device_and_dtype_really_answers(plugin_manager):
    args = ["eval", "--task", "grounding", "--limit", "4", "--n-samples", "8", "--quiet"]
    result = CliRunner().invoke(main, [*args, "--device", "cpu", "--dtype", "bf16"])
    assert result.exit_code == 0, result.output
    assert "grounding" in result.output and "acc" in result.output


def test_device_for_a_remote_model_is_refused(plugin_manager):
    spec = "openai+http://127.0.0.1:9/v1"
    line = cli_error_line(CliRunner().invoke(main, ["chat", "--model", spec, "--device", "cpu", "hi"]))
    assert "takes no device option" in line
