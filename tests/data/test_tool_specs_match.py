"""The tool-use training prompts must show the model exactly the specs of the real contrib tools."""

from __future__ import annotations

import pytest

from qvl_agent.data.react_samples import TOOL_SPECS


def test_training_tool_specs_equal_contrib_tool_specs() -> None:
    calculator = pytest.importorskip("qvl_agent_calculator")
    image_tools = pytest.importorskip("qvl_agent_image_tools")
    tools = []
    calculator.register_tools(tools.append)
    tools += image_tools.make_tools()
    real = {t.name: t.spec().model_dump(exclude_none=True) for t in tools}
    for spec in TOOL_SPECS:
        assert spec == {k: real[spec["name"]][k] for k in ("name", "description", "parameters")}
        # key order matters too: the parameters are rendered with json.dumps into the prompt
        assert list(spec["parameters"]) == list(real[spec["name"]]["parameters"])
