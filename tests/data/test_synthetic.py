"""The synthetic generator: determinism, split separation, format validity, boxes, ReAct tool-use samples."""

from __future__ import annotations

import hashlib
import json
import random
import re

import pytest

from qvl_agent.data.format import load_conversations
from qvl_agent.data.react_samples import TOOL_SPECS, split_episode
from qvl_agent.data.scenes import SceneConfig, normalize_coord, random_scene, render_scene
from qvl_agent.data.synthetic import DataConfig, SyntheticDataset, generate_sample, write_dataset
from qvl_agent.data.vocab import default_vocab_path
from qvl_agent.model.tokenization_qwen import QWenTokenizer
from qvl_agent.prompting import react

N = 150


@pytest.fixture(scope="module")
def samples():
    return list(SyntheticDataset(N, "train", seed=3))


@pytest.fixture(scope="module")
def tokenizer():
    return QWenTokenizer(str(default_vocab_path()))


def test_same_seed_same_samples_and_pictures():
    a, b = generate_sample(7, "train", 1), generate_sample(7, "train", 1)
    assert a.record() == b.record()
    assert list(a.images) == list(b.images)
    for path in a.images:
        assert a.images[path].tobytes() == b.images[path].tobytes()


def test_splits_and_seeds_differ():
    train = [generate_sample(i, "train", 0).record()["conversations"] for i in range(20)]
    held = [generate_sample(i, "heldout", 0).record()["conversations"] for i in range(20)]
    other = [generate_sample(i, "train", 1).record()["conversations"] for i in range(20)]
    strip = re.compile(r"<img>.*?</img>")
    as_text = lambda convs: {strip.sub("", json.dumps(c)) for c in convs}  # noqa: E731
    assert not as_text(train) & as_text(held)
    assert as_text(train) != as_text(other)


def test_every_task_appears(samples):
    assert {s.task for s in samples} == {"caption", "vqa", "grounding", "referring", "multi_image", "tools"}


def test_records_follow_the_finetune_format(samples, tokenizer):
    for s in samples:
        turns = s.record()["conversations"]
        assert [t["from"] for t in turns] == ["user", "assistant"] * (len(turns) // 2)
        refs = [r for t in turns for r in re.findall(r"<img>(.*?)</img>", t["value"])]
        assert refs == list(s.images)
        # the first user turn names its pictures exactly as from_list_format would
        listed = [{"image": r} for r in re.findall(r"<img>(.*?)</img>", turns[0]["value"])]
        if listed and s.task != "tools":
            assert turns[0]["value"].startswith(tokenizer.from_list_format(listed))
        for t in turns:
            parts = tokenizer.to_list_format(t["value"])
            assert [p["image"] for p in parts if "image" in p] == re.findall(r"<img>(.*?)</img>", t["value"])
            ids = tokenizer.encode(t["value"], allowed_special=set(tokenizer.IMAGE_ST))
            assert tokenizer.decode(ids) == t["value"]  # the small vocabulary round-trips exactly


def test_boxes_lie_inside_the_picture_and_on_the_named_object(samples):
    checked = 0
    for s in samples:
        for turn in s.conversations:
            for ref, *coords in re.findall(
                r"<ref>(.*?)</ref><box>\((\d+),(\d+)\),\((\d+),(\d+)\)</box>", turn["value"]
            ):
                x1, y1, x2, y2 = map(int, coords)
                assert 0 <= x1 < x2 <= 999 and 0 <= y1 < y2 <= 999
                # the named object's pixel box, normalised, is the box written
                matches = [sc.norm_box(o) for sc in s.scenes for o in sc.objects if ref.endswith(o.noun())]
                assert (x1, y1, x2, y2) in matches
                checked += 1
    assert checked > 20


def test_objects_are_drawn_where_their_box_says():
    scene = random_scene(
        __import__("random").Random(5), SceneConfig(min_objects=3, max_objects=3, text_prob=0)
    )
    image = render_scene(scene)
    for obj in scene.objects:
        cx, cy = map(int, obj.center)
        assert image.getpixel((cx, cy)) != image.getpixel((0, 0))  # the centre is painted, not background


def test_tool_samples_parse_with_the_react_protocol(samples):
    tools = [s for s in samples if s.task == "tools"]
    assert tools
    kinds = set()
    names = {t["name"] for t in TOOL_SPECS}
    for s in tools:
        query, answer = s.conversations[0]["value"], s.conversations[1]["value"]
        assert query.startswith(react.react_instruction(TOOL_SPECS) + "\n\nQuestion: Picture 1: <img>")
        call, observation, rest = split_episode(answer)
        parsed = react.parse_response(call)
        if observation is None:
            assert parsed["function_call"] is None and parsed["content"]
            kinds.add("none")
            continue
        fc = parsed["function_call"]
        assert fc["name"] in names
        args = json.loads(fc["arguments"])
        assert isinstance(args, dict)
        kinds.add(fc["name"])
        assert rest.startswith("\nThought: I now know the final answer\nFinal Answer: ")
        # the whole episode, as generated in two steps, parses like the server parses it
        assert react.parse_response(answer)["function_call"]["name"] == fc["name"]
        if fc["name"] == "calculator":
            assert str(eval(args["expression"], {"__builtins__": {}})) == observation  # noqa: S307
    assert {"calculator", "none"} <= kinds


def test_write_dataset_round_trips_through_the_loader(tmp_path):
    config = DataConfig(max_turns=2)
    path = write_dataset(tmp_path, 12, "heldout", seed=2, config=config)
    conversations = load_conversations(path)
    assert [c.id for c in conversations] == [f"heldout-{i:06d}" for i in range(12)]
    for conv, sample in zip(conversations, SyntheticDataset(12, "heldout", 2, config), strict=True):
        assert conv.turns == sample.conversations
        assert all((tmp_path / ref).is_file() for ref in conv.images)


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="task_weights"):
        DataConfig(task_weights={"dance": 1.0})
    with pytest.raises(ValueError, match="shapes"):
        SceneConfig(shapes=("hexagon",))
    with pytest.raises(ValueError, match="repeat_prob"):
        SceneConfig(repeat_prob=1.5)
    with pytest.raises(ValueError, match="calculator_thought"):
        DataConfig(calculator_thought="shout")
    with pytest.raises(ValueError, match="coord_snap"):
        DataConfig(coord_snap="up")


def test_the_held_out_split_is_the_one_every_recorded_score_used():
    """Training-only options (``repeat_prob``, ``calculator_thought``) must leave the default split as it was:
    the scores in recipes/demo/README.md were all measured on it."""
    from qvl_agent.training.evaluate import synthetic_items

    items = synthetic_items(40, 0, DataConfig())
    digest = hashlib.sha256(json.dumps([(i.id, i.query, i.expected) for i in items]).encode()).hexdigest()
    assert (len(items), digest) == (74, "07442df2a5d601b61c196a90c02b140d1b73df6c63e15fddb77c1660a379f29e")


def test_repeat_prob_makes_scenes_with_shapes_to_count():
    rng = random.Random(5)
    always = SceneConfig(min_objects=3, max_objects=5, text_prob=0.0, repeat_prob=1.0)
    for _ in range(20):
        scene = random_scene(rng, always)
        assert len({(o.shape, o.colour) for o in scene.objects}) == 1
    rng = random.Random(5)
    half = SceneConfig(min_objects=3, max_objects=5, text_prob=0.0, repeat_prob=0.5)
    scenes = [random_scene(rng, half) for _ in range(200)]
    most = [max(sum(o.shape == x.shape for o in s.objects) for x in s.objects) for s in scenes]
    # without repeats, 3-5 objects of 6 shapes rarely share one; with them most scenes have a shape 2+ times
    assert sum(m >= 2 for m in most) > 150 and max(most) >= 4


@pytest.mark.parametrize(
    ("style", "counts"),
    [
        (
            "count_first",
            r"I count (\d+) \w+ and (\d+) \w+\.|Picture 1 has (\d+) objects and Picture 2 has (\d+)\.",
        ),
        (
            "name_first",
            r"I count the \w+: (\d+), and the \w+: (\d+)\.|I count the objects in Picture 1: (\d+), and in Picture 2: (\d+)\.",
        ),
    ],
)
def test_calculator_thoughts_write_their_counts_in_the_chosen_style(style, counts):
    config = DataConfig(task_weights={"tools": 1.0}, calculator_thought=style)
    checked = 0
    for i in range(60):
        call, _, _ = split_episode(generate_sample(i, "train", 0, config).conversations[1]["value"])
        if "Action: calculator" not in call:
            continue
        thought = call.split("\n")[0]
        m = re.fullmatch(rf"Thought: (?:{counts}) I will compute (\S+) with the calculator\.", thought)
        assert m, thought
        n1, n2 = (int(v) for v in m.groups()[:-1] if v is not None)
        expression = json.loads(react.parse_response(call)["function_call"]["arguments"])["expression"]
        # the expression multiplies the very counts the thought wrote
        assert expression == m.group(m.lastindex) and re.fullmatch(
            rf"{n1}\*(\d+\+{n2}\*\d+|{n2})", expression
        )
        checked += 1
    assert checked >= 10


def test_samples_map_each_drawn_picture_to_its_scene():
    """``scene_of``: every rendered picture knows its scene; a tool's output picture (zoom crop) has none."""
    from qvl_agent.data.synthetic import DataConfig, generate_sample

    config = DataConfig(task_weights={"tools": 1.0, "multi_image": 1.0})
    samples = [generate_sample(i, "train", 0, config) for i in range(40)]
    zoomed = [s for s in samples if any(p.endswith("-zoom.png") for p in s.images)]
    assert zoomed, "expected some zoom-tool samples"
    for sample in samples:
        drawn = [p for p in sample.images if not p.endswith("-zoom.png")]
        assert list(sample.scene_of) == drawn
        assert list(sample.scene_of.values()) == sample.scenes


def test_nearest_snapping_leaves_coarse_coordinates_unbiased():
    """Snapping down puts a coarse target ``step / 2`` below the exact one on average, so a model trained on
    it writes every box shifted up and left; ``"nearest"`` keeps the mean error within half a unit."""
    rng = random.Random(0)
    pixels = [rng.uniform(0, 256) for _ in range(4000)]
    exact = [normalize_coord(p, 256) for p in pixels]
    for snap, mean_error in (("down", -4.5), ("nearest", 0.5)):
        snapped = [normalize_coord(p, 256, 10, snap) for p in pixels]
        assert all(v % 10 == 0 and 0 <= v <= 990 for v in snapped)
        assert all(abs(v - e) <= 10 for v, e in zip(snapped, exact, strict=True))
        errors = [v - e for v, e in zip(snapped, exact, strict=True)]
        assert abs(sum(errors) / len(errors) - mean_error) < 0.3, snap
    assert normalize_coord(255.9, 256, 10, "nearest") == 990  # never rounds up out of [0, 1000)
    assert [normalize_coord(p, 256, 1, "nearest") for p in pixels] == exact


def test_nearest_snapping_reaches_every_box_the_generator_writes():
    config = DataConfig(coord_step=10, coord_snap="nearest", task_weights={"grounding": 1.0, "referring": 1.0})
    down = DataConfig(coord_step=10, task_weights={"grounding": 1.0, "referring": 1.0})
    moved = 0
    for i in range(40):
        sample, other = generate_sample(i, "train", 2, config), generate_sample(i, "train", 2, down)
        text = json.dumps(sample.conversations)
        boxes = re.findall(r"\((\d+),(\d+)\),\((\d+),(\d+)\)", text)
        assert boxes and all(int(v) % 10 == 0 for box in boxes for v in box)
        moved += text != json.dumps(other.conversations)
    assert moved >= 30  # the same questions, most boxes snapped differently
