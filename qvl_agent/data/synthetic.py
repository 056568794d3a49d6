"""Synthetic multimodal conversations in the original Qwen-VL fine-tuning format.

Every sample is a function of ``(seed, split, index)`` only, so the train and held-out splits are reproducible,
disjoint random streams, and a sample can be generated on the fly (training) or written to disk
(:func:`write_dataset`). A sample's record is exactly what ``finetune.py`` reads::

    {"id": "train-000001", "task": "grounding",
     "conversations": [{"from": "user", "value": "Picture 1: <img>images/train-000001-1.png</img>\\nFind the red circle."},
                       {"from": "assistant", "value": "<ref>the red circle</ref><box>(120,88),(310,270)</box>"}]}

Tasks: ``caption``, ``vqa`` (count / colour / shape / position / size / existence / reading words),
``grounding`` (name -> box), ``referring`` (box -> name), ``multi_image`` (Picture 1 vs Picture 2) and ``tools``
(ReAct calls to a calculator and a zoom tool, or a direct answer when no tool is needed). Several question turns
may share one picture (``turns``); later turns carry no picture, like a real multi-turn chat.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from qvl_agent.data import react_samples
from qvl_agent.data.scenes import (
    COORD_SNAPS,
    POSITIONS,
    Scene,
    SceneConfig,
    SceneObject,
    random_scene,
    render_scene,
)

TASKS: tuple[str, ...] = ("caption", "vqa", "grounding", "referring", "multi_image", "tools")
DEFAULT_TASK_WEIGHTS: dict[str, float] = {
    "caption": 1.0,
    "vqa": 3.0,
    "grounding": 3.0,
    "referring": 1.0,
    "multi_image": 1.5,
    "tools": 1.5,
}
SPLITS: tuple[str, ...] = ("train", "heldout")
CALCULATOR_THOUGHTS: tuple[str, ...] = ("count_first", "name_first")


@dataclass
class DataConfig:
    """What the generator produces: scene content, task mix, turns per sample, box precision."""

    scene: SceneConfig = field(default_factory=SceneConfig)
    task_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_TASK_WEIGHTS))
    min_turns: int = 1
    max_turns: int = 3
    #: snap box coordinates to multiples of this (a coarse-to-fine curriculum uses e.g. 32, then 1)
    coord_step: int = 1
    #: how coordinates are snapped to ``coord_step``: ``"down"`` (targets on average ``coord_step / 2`` too
    #: low, so a model learns boxes shifted up and left) or ``"nearest"``
    coord_snap: str = "down"
    #: folder prefix written inside ``<img>…</img>``
    image_prefix: str = "images"
    #: how a calculator episode's thought writes its counts: ``"count_first"`` ("I count 2 squares and 0 stars")
    #: or ``"name_first"`` ("I count the squares: 2, and the stars: 0"), where each count follows the word
    #: naming what is counted, as the answer to "How many squares are there?" does
    calculator_thought: str = "count_first"

    def __post_init__(self) -> None:
        unknown = set(self.task_weights) - set(TASKS)
        if unknown or not any(w > 0 for w in self.task_weights.values()):
            raise ValueError(
                f"DataConfig.task_weights: unknown tasks {sorted(unknown)} or no positive weight"
            )
        if not 1 <= self.min_turns <= self.max_turns:
            raise ValueError("DataConfig: need 1 <= min_turns <= max_turns")
        if not 1 <= self.coord_step <= 500:
            raise ValueError("DataConfig.coord_step must be in [1, 500]")
        if self.coord_snap not in COORD_SNAPS:
            raise ValueError(
                f"DataConfig.coord_snap must be one of {list(COORD_SNAPS)}, got {self.coord_snap!r}"
            )
        if self.calculator_thought not in CALCULATOR_THOUGHTS:
            raise ValueError(
                f"DataConfig.calculator_thought must be one of {list(CALCULATOR_THOUGHTS)}, got {self.calculator_thought!r}"
            )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataConfig:
        data = dict(data)
        scene = data.pop("scene", {}) or {}
        scene = {k: tuple(v) if isinstance(v, list) else v for k, v in scene.items()}
        return cls(scene=SceneConfig(**scene), **data)


@dataclass
class Sample:
    """One conversation plus its pictures (keyed by the path written inside ``<img>``) and scenes."""

    id: str
    task: str
    conversations: list[dict[str, str]]
    images: dict[str, Image.Image]
    scenes: list[Scene]
    #: the scene drawn in each picture; pictures made otherwise (e.g. a zoom tool's crop) have none
    scene_of: dict[str, Scene] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """The fine-tuning JSON record (``id``, ``task``, ``conversations``)."""
        return {"id": self.id, "task": self.task, "conversations": self.conversations}


class SampleBuilder:
    """Collects the turns and pictures of one sample (also used by recipes that mix their own samples)."""

    def __init__(self, sample_id: str, config: DataConfig) -> None:
        self.id = sample_id
        self.config = config
        self.turns: list[dict[str, str]] = []
        self.images: dict[str, Image.Image] = {}
        self.scenes: list[Scene] = []
        self.scene_of: dict[str, Scene] = {}

    def picture(self, scene: Scene | None, image: Image.Image | None = None, tag: str = "") -> str:
        """Register a picture; returns the path written inside ``<img>``."""
        path = f"{self.config.image_prefix}/{self.id}-{len(self.images) + 1}{tag}.png"
        self.images[path] = image if image is not None else render_scene(scene)  # type: ignore[arg-type]
        if scene is not None:
            self.scenes.append(scene)
            self.scene_of[path] = scene
        return path

    def ask(self, question: str, answer: str) -> None:
        self.turns.append({"from": "user", "value": question})
        self.turns.append({"from": "assistant", "value": answer})


def picture_header(paths: list[str]) -> str:
    """``Picture 1: <img>a.png</img>\\nPicture 2: …`` exactly as ``from_list_format`` writes it."""
    return "".join(f"Picture {i}: <img>{p}</img>\n" for i, p in enumerate(paths, 1))


# --------------------------------------------------------------------------------------------- language


def plural(shape: str) -> str:
    return shape + "es" if shape.endswith("x") else shape + "s"


def where(position: str) -> str:
    """Position word -> phrase: ``at the top left``, ``in the center``, ``on the left``."""
    if position == "center":
        return "in the center"
    if position in ("left", "right"):
        return f"on the {position}"
    return f"at the {position}"


def referring_expression(scene: Scene, obj: SceneObject) -> str | None:
    """A phrase naming exactly this object (``the red circle``, ``the large red circle``), or None."""
    same = [o for o in scene.objects if o.noun() == obj.noun()]
    if len(same) == 1:
        return f"the {obj.noun()}"
    if obj.is_text:
        return None
    if sum(o.size == obj.size for o in same) == 1:
        return f"the {obj.size} {obj.noun()}"
    return None


def box_text(box: tuple[int, int, int, int]) -> str:
    x1, y1, x2, y2 = box
    return f"<box>({x1},{y1}),({x2},{y2})</box>"


def caption(scene: Scene) -> str:
    parts = [f"{o.description()} {where(scene.position_of(o))}" for o in scene.reading_order()]
    if len(parts) == 1:
        return f"There is {parts[0]}."
    return f"There are {len(parts)} objects: {', '.join(parts[:-1])} and {parts[-1]}."


CAPTION_PROMPTS = ("Describe the image.", "What is in this picture?", "Describe the picture briefly.")
GROUNDING_PROMPTS = ("Find {ref}.", "Where is {ref}? Give its bounding box.", "Locate {ref} in the picture.")
REFERRING_PROMPTS = ("What is in {box}?", "What object is inside {box}?")


# --------------------------------------------------------------------------------------------- questions


def vqa_question(rng: random.Random, scene: Scene, config: DataConfig) -> tuple[str, str]:
    """One short-answer question about a single scene."""
    shapes = [o for o in scene.objects if not o.is_text]
    words = [o for o in scene.objects if o.is_text and o.size != "tiny"]
    kinds = ["count_all", "count_shape", "count_colour", "exists", "position", "size"]
    if shapes:
        kinds += ["colour", "shape"]
    if words:
        kinds += ["read"]
    for _ in range(20):
        kind = rng.choice(kinds)
        if kind == "count_all":
            return "How many objects are there?", str(len(scene.objects))
        if kind == "count_shape":
            shape = rng.choice(config.scene.shapes)
            n = sum(o.shape == shape for o in scene.objects)
            return f"How many {plural(shape)} are there?", str(n)
        if kind == "count_colour":
            colour = rng.choice(config.scene.colours)
            n = sum(o.colour == colour and not o.is_text for o in scene.objects)
            return f"How many {colour} shapes are there?", str(n)
        if kind == "exists":
            colour, shape = rng.choice(config.scene.colours), rng.choice(config.scene.shapes)
            if shapes and rng.random() < 0.5:
                pick = rng.choice(shapes)
                colour, shape = pick.colour, pick.shape
            present = any(o.colour == colour and o.shape == shape for o in scene.objects)
            return f"Is there a {colour} {shape}?", "yes" if present else "no"
        if kind == "colour":
            obj = rng.choice(shapes)
            if sum(o.shape == obj.shape for o in shapes) == 1:
                return f"What colour is the {obj.shape}?", obj.colour
        if kind == "shape":
            obj = rng.choice(shapes)
            if sum(o.colour == obj.colour for o in shapes) == 1:
                return f"What shape is the {obj.colour} object?", obj.shape
        if kind in ("position", "size"):
            obj = rng.choice(scene.objects)
            ref = referring_expression(scene, obj)
            if ref and kind == "position":
                return f"Where is {ref}?", scene.position_of(obj)
            if ref and kind == "size" and not obj.is_text and not ref.startswith(f"the {obj.size} "):
                return f"How big is {ref}?", obj.size
        if kind == "read":
            obj = rng.choice(words)
            if sum(o.colour == obj.colour for o in words) == 1:
                return f"What word is written in {obj.colour}?", obj.text or ""
    return "How many objects are there?", str(len(scene.objects))


def grounding_question(rng: random.Random, scene: Scene, config: DataConfig) -> tuple[str, str] | None:
    candidates = [(o, r) for o in scene.objects if (r := referring_expression(scene, o))]
    if not candidates:
        return None
    obj, ref = rng.choice(candidates)
    answer = f"<ref>{ref}</ref>{box_text(scene.norm_box(obj, config.coord_step, config.coord_snap))}"
    return rng.choice(GROUNDING_PROMPTS).format(ref=ref), answer


def referring_question(rng: random.Random, scene: Scene, config: DataConfig) -> tuple[str, str]:
    obj = rng.choice(scene.objects)
    box = box_text(scene.norm_box(obj, config.coord_step, config.coord_snap))
    answer = f'the word "{obj.text}"' if obj.is_text else f"a {obj.colour} {obj.shape}"
    return rng.choice(REFERRING_PROMPTS).format(box=box), answer


def multi_image_question(rng: random.Random, a: Scene, b: Scene, config: DataConfig) -> tuple[str, str]:
    """A question comparing Picture 1 and Picture 2 (or asking about one of them)."""
    scenes = (a, b)
    kind = rng.choice(["more", "which_has", "count_in", "colour_in", "ground_in"])
    if kind == "more":
        shape = rng.choice(config.scene.shapes)
        na, nb = (sum(o.shape == shape for o in s.objects) for s in scenes)
        if na != nb:
            return f"Which picture has more {plural(shape)}?", "Picture 1" if na > nb else "Picture 2"
        na, nb = len(a.objects), len(b.objects)
        answer = "Picture 1" if na > nb else "Picture 2" if nb > na else "the same"
        return "Which picture has more objects?", answer
    if kind == "which_has":
        pool = [o for s in scenes for o in s.objects if not o.is_text]
        if pool and rng.random() < 0.75:
            colour, shape = (p := rng.choice(pool)).colour, p.shape
        else:
            colour, shape = rng.choice(config.scene.colours), rng.choice(config.scene.shapes)
        has = [any(o.colour == colour and o.shape == shape for o in s.objects) for s in scenes]
        answer = {(True, True): "both", (True, False): "Picture 1", (False, True): "Picture 2"}.get(
            (has[0], has[1]), "neither"
        )
        return f"Which picture has a {colour} {shape}?", answer
    k = rng.randint(1, 2)
    scene = scenes[k - 1]
    if kind == "count_in":
        shape = rng.choice(config.scene.shapes)
        return f"How many {plural(shape)} are in Picture {k}?", str(
            sum(o.shape == shape for o in scene.objects)
        )
    if kind == "colour_in":
        shapes = [o for o in scene.objects if not o.is_text]
        unique = [o for o in shapes if sum(x.shape == o.shape for x in shapes) == 1]
        if unique:
            obj = rng.choice(unique)
            return f"What colour is the {obj.shape} in Picture {k}?", obj.colour
    found = grounding_question(rng, scene, config)
    if found:
        ref = found[1].split("</ref>")[0].removeprefix("<ref>")
        return f"Find {ref} in Picture {k}.", found[1]
    return f"How many objects are in Picture {k}?", str(len(scene.objects))


# --------------------------------------------------------------------------------------------- samples


def two_picture_turns(rng: random.Random, builder: SampleBuilder, config: DataConfig, n_turns: int) -> None:
    """Two new scenes as Picture 1 and Picture 2, then ``n_turns`` questions comparing them."""
    a, b = random_scene(rng, config.scene), random_scene(rng, config.scene)
    header = picture_header([builder.picture(a), builder.picture(b)])
    for turn in range(n_turns):
        question, answer = multi_image_question(rng, a, b, config)
        builder.ask((header if turn == 0 else "") + question, answer)


def _pick_task(rng: random.Random, config: DataConfig) -> str:
    tasks = [t for t in TASKS if config.task_weights.get(t, 0) > 0]
    return rng.choices(tasks, weights=[config.task_weights[t] for t in tasks])[0]


def generate_sample(
    index: int, split: str = "train", seed: int = 0, config: DataConfig | None = None
) -> Sample:
    """The ``index``-th sample of a split: a pure function of ``(seed, split, index, config)``."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    config = config or DataConfig()
    rng = random.Random(f"qvl-synthetic/{seed}/{split}/{index}")
    sample_id = f"{split}-{index:06d}"
    builder = SampleBuilder(sample_id, config)
    task = _pick_task(rng, config)
    n_turns = rng.randint(config.min_turns, config.max_turns)

    if task == "tools":
        react_samples.tool_sample(rng, builder, config)
    elif task == "multi_image":
        two_picture_turns(rng, builder, config, n_turns)
    else:
        scene = random_scene(rng, config.scene)
        header = picture_header([builder.picture(scene)])
        for turn in range(n_turns):
            qa: tuple[str, str] | None = None
            if task == "caption":
                qa = (
                    (rng.choice(CAPTION_PROMPTS), caption(scene))
                    if turn == 0
                    else vqa_question(rng, scene, config)
                )
            elif task == "grounding":
                qa = grounding_question(rng, scene, config) or vqa_question(rng, scene, config)
            elif task == "referring":
                qa = referring_question(rng, scene, config)
            else:
                qa = vqa_question(rng, scene, config)
            builder.ask((header if turn == 0 else "") + qa[0], qa[1])
    return Sample(sample_id, task, builder.turns, builder.images, builder.scenes, builder.scene_of)


class SyntheticDataset:
    """``n`` samples of one split, generated on demand (``dataset[i]`` is always the same sample)."""

    def __init__(self, n: int, split: str = "train", seed: int = 0, config: DataConfig | None = None) -> None:
        self.n, self.split, self.seed = n, split, seed
        self.config = config or DataConfig()

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> Sample:
        if not 0 <= index < self.n:
            raise IndexError(index)
        return generate_sample(index, self.split, self.seed, self.config)

    def __iter__(self) -> Iterator[Sample]:
        return (self[i] for i in range(self.n))


def write_dataset(
    out_dir: str | Path,
    n: int,
    split: str = "train",
    seed: int = 0,
    config: DataConfig | None = None,
    progress: bool = False,
) -> Path:
    """Write ``n`` samples as ``OUT/{split}.json`` with pictures under ``OUT/images/``; returns the JSON path.

    Paths inside ``<img>`` are relative to ``OUT`` (readers resolve them against the JSON file's folder).
    """
    out = Path(out_dir)
    records = []
    dataset = SyntheticDataset(n, split, seed, config)
    items: Any = iter(dataset)
    if progress:
        from tqdm import tqdm

        items = tqdm(items, total=n, desc=f"generating {split}", unit="sample")
    for sample in items:
        for path, image in sample.images.items():
            target = out / path
            target.parent.mkdir(parents=True, exist_ok=True)
            image.save(target)
        records.append(sample.record())
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / f"{split}.json"
    json_path.write_text(json.dumps(records, indent=1, ensure_ascii=False), encoding="utf-8")
    return json_path


__all__ = [
    "POSITIONS",
    "DataConfig",
    "Sample",
    "SyntheticDataset",
    "TASKS",
    "generate_sample",
    "picture_header",
    "write_dataset",
]
