"""Training conversations for the demo model: the synthetic generator's questions, packed densely.

The held-out split that ``qvl-agent eval`` scores is the generator's default (1-3 question turns per picture).
For training, the same question functions of :mod:`qvl_agent.data.synthetic` are asked many times about one
encoded picture (``min_turns``..``max_turns``, e.g. 6-10): the 256 image slots dominate the sequence, so extra
question turns are almost free supervision. A :class:`MixSpec` says what a stage trains on; a sample is a pure
function of ``(index, split, seed, spec)``, so a resumed run sees the same data.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import Any

from qvl_agent.data import react_samples
from qvl_agent.data.scenes import Scene
from qvl_agent.data.synthetic import (
    CAPTION_PROMPTS,
    DataConfig,
    Sample,
    SampleBuilder,
    caption,
    grounding_question,
    picture_header,
    referring_question,
    two_picture_turns,
    vqa_question,
)

KINDS = ("single", "multi", "tools")
QUESTIONS = ("grounding", "vqa", "referring", "caption")


@dataclass
class MixSpec:
    """What one training stage sees."""

    #: conversation kinds: one picture with many questions, two pictures, a ReAct tool episode
    kinds: dict[str, float] = field(default_factory=lambda: {"single": 1.0})
    #: question types asked about a single picture
    questions: dict[str, float] = field(default_factory=lambda: {"grounding": 1.0, "vqa": 1.0})
    min_turns: int = 6
    max_turns: int = 10
    #: ``SceneConfig`` fields (e.g. ``{"max_objects": 2, "tiny_prob": 0}``)
    scene: dict[str, Any] = field(default_factory=dict)
    coord_step: int = 1
    #: ``DataConfig.coord_snap``: ``"nearest"`` snaps box coordinates to the nearest multiple of ``coord_step``
    coord_snap: str = "down"
    #: ``DataConfig.calculator_thought``: how a calculator episode's thought writes its counts
    calculator_thought: str = "count_first"

    def __post_init__(self) -> None:
        bad = (set(self.kinds) - set(KINDS)) | (set(self.questions) - set(QUESTIONS))
        if bad:
            raise ValueError(f"MixSpec: unknown kinds/questions {sorted(bad)}")
        if not 1 <= self.min_turns <= self.max_turns:
            raise ValueError("MixSpec: need 1 <= min_turns <= max_turns")

    def stage(self, entry: dict[str, Any]) -> MixSpec:
        """This mix with one curriculum entry's fields (all but its ``until``) put in."""
        return replace(self, **{k: v for k, v in entry.items() if k != "until"})

    def data_config(self) -> DataConfig:
        return DataConfig.from_dict(
            {
                "scene": self.scene,
                "coord_step": self.coord_step,
                "coord_snap": self.coord_snap,
                "calculator_thought": self.calculator_thought,
            }
        )


def _choice(rng: random.Random, weights: dict[str, float]) -> str:
    names = [k for k, w in weights.items() if w > 0]
    return rng.choices(names, weights=[weights[k] for k in names])[0]


def single_question(rng: random.Random, scene: Scene, kind: str, config: DataConfig) -> tuple[str, str]:
    if kind == "grounding":
        return grounding_question(rng, scene, config) or vqa_question(rng, scene, config)
    if kind == "referring":
        return referring_question(rng, scene, config)
    if kind == "caption":
        return rng.choice(CAPTION_PROMPTS), caption(scene)
    return vqa_question(rng, scene, config)


def dense_sample(index: int, split: str, seed: int, spec: MixSpec) -> Sample:
    """Sample ``index`` of a stage's stream (``split`` keeps train and held-out streams apart)."""
    from qvl_agent.data.scenes import random_scene

    rng = random.Random(f"qvl-demo/{seed}/{split}/{index}")
    config = spec.data_config()
    out = SampleBuilder(f"{split}-{index:07d}", config)
    kind = _choice(rng, spec.kinds)
    n_turns = rng.randint(spec.min_turns, spec.max_turns)
    if kind == "tools":
        react_samples.tool_sample(rng, out, config)
    elif kind == "multi":
        two_picture_turns(rng, out, config, n_turns)
    else:
        scene = random_scene(rng, config.scene)
        header = picture_header([out.picture(scene)])
        for turn in range(n_turns):
            question, answer = single_question(rng, scene, _choice(rng, spec.questions), config)
            out.ask((header if turn == 0 else "") + question, answer)
    return Sample(out.id, kind, out.turns, out.images, out.scenes, out.scene_of)
