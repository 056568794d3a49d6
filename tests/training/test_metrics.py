"""Eval metrics on hand-made predictions: IoU, exact match, tool-call scoring, the eval runner."""

from __future__ import annotations

import pytest

from qvl_agent.data.format import Conversation
from qvl_agent.testing import ScriptedBackend
from qvl_agent.training import evaluate
from qvl_agent.training.metrics import (
    arguments_match,
    arithmetic_value,
    box_correct,
    exact_match,
    extract_boxes,
    iou,
    score_tool_call,
)


def test_iou():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (10, 10, 20, 20)) == 0.0
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 0, 10), (0, 0, 0, 10)) == 0.0


def test_box_parsing_and_acc_at_half():
    ref = "<ref>the red circle</ref><box>(100,100),(200,200)</box>"
    assert extract_boxes(ref) == [("the red circle", (100, 100, 200, 200))]
    assert box_correct("<ref>the red circle</ref><box>(110,100),(210,200)</box>", ref)  # IoU 0.82
    assert not box_correct("<box>(150,150),(250,250)</box>", ref)  # IoU 0.14
    assert not box_correct("a red circle", ref)


def test_exact_match_normalises_case_punctuation_articles():
    assert exact_match("A red circle.", "red circle")
    assert exact_match(" Picture 2 ", "picture 2")
    assert not exact_match("3", "4")


def test_arithmetic_and_argument_matching():
    assert arithmetic_value("2*3+4*5") == 26
    assert arithmetic_value("__import__('os')") is None
    assert arithmetic_value("9**9**9") is None
    assert arguments_match({"expression": "3*2+5*4"}, {"expression": "2*3+4*5"})
    assert not arguments_match({"expression": "2*3"}, {"expression": "2*4"})
    assert arguments_match(
        {"image": 1, "box": [100, 100, 300, 300]}, {"image": 1, "box": [110, 100, 300, 310]}
    )
    assert not arguments_match(
        {"image": 2, "box": [100, 100, 300, 300]}, {"image": 1, "box": [100, 100, 300, 300]}
    )
    assert not arguments_match({"image": 1}, {"image": 1, "box": [0, 0, 1, 1]})


CALL = 'Thought: count.\nAction: calculator\nAction Input: {"expression": "2*3"}'


@pytest.mark.parametrize(
    ("prediction", "expected", "scores"),
    [
        (CALL, CALL, (True, True, True)),
        ('Thought: x\nAction: calculator\nAction Input: {"expression": "3*2"}', CALL, (True, True, True)),
        ('Thought: x\nAction: calculator\nAction Input: {"expression": "3*3"}', CALL, (True, True, False)),
        (
            'Thought: x\nAction: zoom\nAction Input: {"image": 1, "box": [0,0,9,9]}',
            CALL,
            (True, False, False),
        ),
        ("Thought: x\nAction: calculator\nAction Input: 2*3", CALL, (False, False, False)),
        ("Thought: I can answer.\nFinal Answer: 6", CALL, (True, False, False)),
        ("Thought: I can answer.\nFinal Answer: red", "Thought: y\nFinal Answer: blue", (True, True, True)),
        (CALL, "Thought: y\nFinal Answer: blue", (True, False, False)),
        ("just words", "Thought: y\nFinal Answer: blue", (False, False, False)),
    ],
)
def test_tool_call_scoring(prediction, expected, scores):
    s = score_tool_call(prediction, expected)
    assert (s.valid_format, s.right_tool, s.right_arguments) == scores


def _items():
    tools_query = "Answer the following questions as best you can.\nAction Input: the input to the action\n\nQuestion: Picture 1: <img>a</img>\nsum?"
    convs = [
        Conversation(
            "g",
            [
                {"from": "user", "value": "Picture 1: <img>a</img>\nFind the dot."},
                {"from": "assistant", "value": "<ref>the dot</ref><box>(100,100),(200,200)</box>"},
                {"from": "user", "value": "How many dots?"},
                {"from": "assistant", "value": "1"},
            ],
            {"a": "a"},
        ),
        Conversation(
            "t",
            [
                {"from": "user", "value": tools_query},
                {
                    "from": "assistant",
                    "value": CALL + "\nObservation: 6\nThought: I now know the final answer\nFinal Answer: 6",
                },
            ],
            {"a": "a"},
        ),
    ]
    from PIL import Image

    picture = Image.new("RGB", (20, 20))
    return evaluate.items_from_conversations(convs, lambda c: {"a": picture})


def test_items_get_tasks_history_and_pictures():
    items = _items()
    assert [i.task for i in items] == ["grounding", "vqa", "tools"]
    assert items[1].history == [(items[0].query, items[0].expected)] and len(items[1].images) == 1


def test_runner_scores_a_scripted_model():
    items = _items()
    replies = [
        "<ref>the dot</ref><box>(105,100),(200,205)</box>",  # grounding: right
        "2",  # vqa: wrong
        CALL,  # tool call: right; stops at Observation
        " I now know the final answer\nFinal Answer: 6",  # after the observation: right
    ]
    backend = ScriptedBackend(replies)
    results = [evaluate.run_item(backend, i) for i in items]
    summary = evaluate.summarize(results)
    assert summary["grounding"]["accuracy"] == 1.0 and summary["vqa"]["accuracy"] == 0.0
    assert summary["tools"] == {
        "n": 1,
        "accuracy": 1.0,
        "valid_format": 1.0,
        "right_tool": 1.0,
        "right_arguments": 1.0,
        "final_answer": 1.0,
    }
    # the tool turn stops at the observation, then continues the same assistant turn in completion mode
    assert backend.requests[2].stop == ["Observation:"]
    assert backend.requests[3].query is None and backend.requests[3].history[-1][1].endswith(
        "\nObservation: 6\nThought:"
    )


def test_refcoco_and_vqa_jsonl(tmp_path):
    from PIL import Image

    Image.new("RGB", (200, 100)).save(tmp_path / "p.png")
    (tmp_path / "g.jsonl").write_text(
        '{"image": "p.png", "sent": "the cat", "bbox": [20, 10, 100, 50], "width": 200, "height": 100}\n'
    )
    (tmp_path / "v.jsonl").write_text(
        '{"image": "p.png", "question": "What?", "answers": ["cat", "a cat"]}\n'
    )
    (g,) = evaluate.items_from_file(tmp_path / "g.jsonl")
    assert g.task == "grounding" and g.expected == "<ref>the cat</ref><box>(100,100),(500,500)</box>"
    (v,) = evaluate.items_from_file(tmp_path / "v.jsonl")
    assert v.task == "vqa" and evaluate.score_answer("vqa", "Cat", v.expected)
