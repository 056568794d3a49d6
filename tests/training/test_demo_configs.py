"""Every committed recipe config describes data the generator can make."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "demo"
sys.path.insert(0, str(RECIPE))

from demo_data import MixSpec  # noqa: E402

CONFIGS = sorted((RECIPE / "configs").glob("*.json"))


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_every_config_makes_valid_data_at_every_curriculum_stage(config: Path) -> None:
    """A typo in a mix (an unknown scene field, thought style or kind) fails here, not an hour into a run."""
    cfg = json.loads(config.read_text())
    base = MixSpec(**cfg["joint"]["mix"])
    for entry in [{}, *cfg["joint"].get("curriculum", [])]:
        base.stage(entry).data_config()
    # a continuation starts from weights inside the repository: a run's final, a committed resume, the package's
    assert cfg.get("init", "recipes/demo/").startswith(("recipes/demo/", "qvl_agent/assets/"))


def test_a_bad_mix_is_caught() -> None:
    with pytest.raises(ValueError, match="repeat_prob"):
        MixSpec(scene={"repeat_prob": 2.0}).data_config()
    with pytest.raises(TypeError, match="repeats"):
        MixSpec(scene={"repeats": 0.5}).data_config()
    with pytest.raises(ValueError, match="calculator_thought"):
        MixSpec(calculator_thought="loud").data_config()
