"""The embedded demo model (``load_model("demo")``) really sees, grounds and calls tools on held-out data.

Every question comes from the held-out synthetic split (seed 0) that ``qvl-agent eval`` scores; the answers are
generated greedily by the shipped weights and scored with the evaluation's own metrics. Two kinds of checks:

- floors the shipped model must keep (well above chance and above the session-1 interim checkpoint, below
  what it measures, see ``recipes/demo/README.md``), so a worse checkpoint cannot be shipped unnoticed;
- issue #8's targets, ``xfail`` until a checkpoint meets them.
"""

from __future__ import annotations

import pytest

from qvl_agent.model.loading import demo_checkpoint_dir

needs_weights = pytest.mark.skipif(
    not (demo_checkpoint_dir() / "model.safetensors").is_file(),
    reason="no demo weights in qvl_agent/assets/demo (train them with recipes/demo)",
)
# Remove once the shipped checkpoint meets the issue-8 targets (scores in recipes/demo/README.md).
below_target = pytest.mark.xfail(
    reason="issue #8 targets not met yet: the shipped model gets ~73% of tool arguments right (target 90%)",
    raises=AssertionError,
    strict=False,
)


@pytest.fixture(scope="module")
def backend(device):
    from qvl_agent.backends import LocalQwenBackend

    return LocalQwenBackend.from_pretrained("demo", device=device)


@pytest.fixture(scope="module")
def heldout():
    from qvl_agent.training import evaluate

    return evaluate.synthetic_items(80, seed=0)


def _run(backend, items):
    from qvl_agent.training import evaluate

    return [evaluate.run_item(backend, i, max_new_tokens=110 if i.task == "tools" else 64) for i in items]


@needs_weights
def test_demo_model_is_small_package_data():
    size = sum(f.stat().st_size for f in demo_checkpoint_dir().iterdir() if f.is_file())
    assert size <= 20 * 1024 * 1024


@needs_weights
@pytest.mark.parametrize(
    ("task", "n", "floor"),
    # measured on these questions (demo_countp6g): grounding 0.80, vqa 0.85, multi-image 0.69 (chance: ~0 for boxes);
    # demo_plural4 (shipped in sessions 17-18) 0.85, 0.70, 0.69; demo_plural3w (shipped in session 16) 0.90, 0.75, 0.69; demo_bind3 (shipped in sessions 6-15) 0.90, 0.70, 0.69; demo_attn3 (shipped in sessions 4-5) measured 0.80, 0.65, 0.56; demo_more2 (before) 0.40, 0.55, 0.44
    [("grounding", 20, 0.7), ("vqa", 20, 0.55), ("multi-image", 16, 0.45)],
)
def test_answers_heldout_questions_above_a_floor(backend, heldout, task, n, floor):
    results = _run(backend, [i for i in heldout if i.task == task][:n])
    accuracy = sum(r.correct for r in results) / len(results)
    wrong = [(r.prediction, r.expected) for r in results if not r.correct][:3]
    assert accuracy >= floor, (accuracy, wrong)


@needs_weights
def test_tool_questions_get_well_formed_replies_choosing_the_right_tool(backend, heldout):
    """Calculator, zoom or no tool at all: the first ReAct step parses and picks what the reference picks."""
    items = [i for i in heldout if i.task == "tools"][:8]
    assert {"calculator", "zoom", None} <= {
        (
            "calculator"
            if "Action: calculator" in i.expected
            else "zoom"
            if "Action: zoom" in i.expected
            else None
        )
        for i in items
    }
    for item, result in zip(items, _run(backend, items), strict=True):
        assert result.tool is not None
        assert result.tool["valid_format"], result.prediction
        assert result.tool["right_tool"], (result.prediction, item.expected)


@needs_weights
def test_grounds_a_heldout_object(backend, heldout):
    from qvl_agent.training.metrics import extract_boxes, iou

    item = next(i for i in heldout if i.task == "grounding")
    (result,) = _run(backend, [item])
    boxes = extract_boxes(result.prediction)
    assert boxes, f"no <box> in the answer {result.prediction!r}"
    assert iou(boxes[0][1], extract_boxes(item.expected)[0][1]) >= 0.5, (result.prediction, item.expected)


@needs_weights
@below_target
def test_calls_the_calculator_with_the_right_arguments(backend, heldout):
    item = next(i for i in heldout if i.task == "tools" and "\nAction: calculator" in i.expected)
    (result,) = _run(backend, [item])
    assert result.tool is not None and result.tool["right_arguments"], (result.prediction, item.expected)


@pytest.mark.parametrize("span", [16, 64, 256])
def test_tokenizer_image_span_is_configurable_and_saved(span, tmp_path):
    """A small model with fewer resampler queries needs a shorter ``<img>`` span (default: 256 slots)."""
    from qvl_agent.data.vocab import default_vocab_path
    from qvl_agent.model.errors import InputError
    from qvl_agent.model.tokenization_qwen import QWenTokenizer

    tokenizer = QWenTokenizer(str(default_vocab_path()), image_span=span)
    text = "Picture 1: <img>a.png</img>\nFind the red circle."
    ids = tokenizer.encode(text)
    start, end = ids.index(tokenizer.img_start_id), ids.index(tokenizer.img_end_id)
    assert end - start - 1 == span
    assert ids[start + 1 : start + 6] == list(b"a.png")
    assert ids[start + 6 : end] == [tokenizer.img_pad_id] * (span - 5)
    assert tokenizer.decode(ids) == text

    tokenizer.save_pretrained(tmp_path)
    assert QWenTokenizer.from_pretrained(tmp_path).encode(text) == ids
    with pytest.raises(InputError, match=f"at most {span}"):
        tokenizer.encode("<img>" + "p" * (span + 1) + "</img>")


def test_tokenizer_image_span_default_and_bad_values():
    from qvl_agent.data.vocab import default_vocab_path
    from qvl_agent.model.errors import InputError
    from qvl_agent.model.tokenization_qwen import IMG_TOKEN_SPAN, QWenTokenizer

    assert QWenTokenizer(str(default_vocab_path())).image_span == IMG_TOKEN_SPAN == 256
    for bad in (0, -3, 2.5, True):
        with pytest.raises(InputError, match="image_span"):
            QWenTokenizer(str(default_vocab_path()), image_span=bad)


@needs_weights
def test_zoom_refinement_places_tiny_objects_better_than_the_weights_alone(backend, heldout):
    """``demo`` (the weights behind zoom refinement) against the weights alone, on the held-out questions
    about tiny objects (a box side under 70 of 1000 units: 5-8 px of the model's 128 px picture)."""
    from qvl_agent.training.metrics import extract_boxes
    from qvl_agent.zoom_refine import ZoomRefineBackend

    tiny = [
        i
        for i in heldout
        if i.task in ("grounding", "multi-image")
        and extract_boxes(i.expected)
        and (lambda b: b[2] - b[0])(extract_boxes(i.expected)[0][1]) < 70
    ]
    assert len(tiny) >= 8
    plain = sum(r.correct for r in _run(backend, tiny))
    refined = sum(r.correct for r in _run(ZoomRefineBackend(backend), tiny))
    # measured on these questions: 3 of 9 by the weights alone, 8 of 9 refined
    assert refined >= plain + 3 and refined >= 0.7 * len(tiny), (plain, refined, len(tiny))
