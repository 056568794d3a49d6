"""The synthetic generator: determinism, split separation, format validity, boxes, ReAct tool-use samples."""

from __future__ import annotations

import json
import re

import pytest

from qvl_agent.data.format import load_conversations
from qvl_agent.data.react_samples import TOOL_SPECS, split_episode
from qvl_agent.data.scenes import SceneConfig, random_scene, render_scene
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
