"""Tool-use samples in the exact ReAct text the server uses (rendered by :mod:`qvl_agent.prompting.react`).

A tool-use sample is one user turn (ReAct instruction + ``Question: `` + pictures + question) and one assistant
turn holding the whole episode, as the server's text-completion step sees it::

    Thought: There are 2 circles and 3 squares. I will compute 2*3+3*5 with the calculator.
    Action: calculator
    Action Input: {"expression": "2*3+3*5"}
    Observation: 21
    Thought: I now know the final answer
    Final Answer: 21

At inference the model writes up to ``Action Input`` (generation stops at ``Observation:``), the tool runs, and
the server continues the same assistant turn after ``Observation: …\\nThought:``. The trainer leaves the
observation text out of the loss (the tool writes it, not the model). When no tool is needed the answer is
``Thought: …\\nFinal Answer: …`` directly.
"""

from __future__ import annotations

import json
import random
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from qvl_agent.data.scenes import Scene, SceneObject, normalize_coord, random_scene
from qvl_agent.prompting import react

if TYPE_CHECKING:
    from qvl_agent.data.synthetic import DataConfig, SampleBuilder

#: the tools offered in tool-use prompts: exactly the specs (name, description, JSON-Schema parameters, key order
#: included) of the contrib calculator and image-tools ``zoom`` tools, so a trained model sees at inference the very
#: prompt text it was trained on
_BOX_SCHEMA: dict[str, Any] = {
    "type": "array",
    "items": {"type": "integer", "minimum": 0, "maximum": 1000},
    "minItems": 4,
    "maxItems": 4,
    "description": "[x1, y1, x2, y2] in the picture's [0,1000) coordinates",
}
TOOL_SPECS: list[dict[str, Any]] = [
    {
        "name": "calculator",
        "description": 'Evaluate an arithmetic expression such as "(3 + 4) * 2" or "sqrt(16) + 2**3" and return '
        "the result.",
        "parameters": {
            "properties": {
                "expression": {"description": "the arithmetic expression to compute", "type": "string"}
            },
            "required": ["expression"],
            "type": "object",
        },
    },
    {
        "name": "zoom",
        "description": "Crop a picture to a box and enlarge it, to look closely at small details. "
        "The box is [x1, y1, x2, y2] in the picture's [0,1000) coordinates. "
        "The enlarged crop becomes the next picture.",
        "parameters": {
            "type": "object",
            "properties": {
                "image": {
                    "type": "integer",
                    "minimum": 1,
                    "description": "the picture number, starting at 1",
                },
                "box": _BOX_SCHEMA,
            },
            "required": ["image", "box"],
        },
    },
]
FINAL_THOUGHT = " I now know the final answer\nFinal Answer: "
DIRECT_THOUGHT = "Thought: I can answer this directly from the picture.\nFinal Answer: "
TOOL_KINDS: dict[str, float] = {"calculator": 0.45, "zoom": 0.25, "none": 0.30}


def image_observation(number: int, path: str) -> str:
    """The observation text of a tool that returned a picture: it becomes ``Picture N`` of the conversation."""
    return f"Picture {number}: <img>{path}</img>"


def react_query(user_text: str, tools: list[dict[str, Any]] | None = None) -> str:
    """The user turn as the server renders it: ReAct instruction, then ``Question: `` and the text."""
    query, _ = react.parse_messages([{"role": "user", "content": user_text}], tools or TOOL_SPECS)
    assert query is not None
    return query


def react_episode(
    user_text: str,
    thought: str,
    name: str,
    arguments: dict[str, Any],
    observation: str,
    final_answer: str,
    tools: list[dict[str, Any]] | None = None,
) -> tuple[str, str]:
    """``(user turn, assistant turn)`` of a one-call episode, rendered through the server's own functions."""
    messages = [
        {"role": "user", "content": user_text},
        {
            "role": "assistant",
            "content": f"Thought: {thought}",
            "function_call": {"name": name, "arguments": json.dumps(arguments)},
        },
        {"role": "function", "content": observation},
    ]
    query, history = react.parse_messages(messages, tools or TOOL_SPECS)
    assert query is None and len(history) == 1
    user, assistant = history[0]
    return user, assistant + FINAL_THOUGHT + final_answer


def split_episode(answer: str) -> tuple[str, str | None, str]:
    """Split an assistant ReAct turn into ``(call part, observation, rest)``.

    The call part ends right after the ``Action Input`` (what the model writes before the tool runs); the
    rest starts with ``\\nThought:`` (what it writes after). Without a call: ``(answer, None, "")``.
    """
    marker = "\nObservation:"
    k = answer.find(marker)
    if k < 0:
        return answer, None, ""
    t = answer.find("\nThought:", k)
    end = t if t >= 0 else len(answer)
    return answer[:k], answer[k + len(marker) : end].strip(), answer[end:]


def _zoom_box(scene: Scene, obj: SceneObject, step: int, snap: str = "down") -> list[int]:
    """A box around ``obj`` three times its size (at least a fifth of the picture), in [0,1000)."""
    x1, y1, x2, y2 = obj.box
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    half = max(3 * max(x2 - x1, y2 - y1), min(scene.width, scene.height) // 5) / 2
    left, top = max(0.0, cx - half), max(0.0, cy - half)
    right, bottom = min(float(scene.width), cx + half), min(float(scene.height), cy + half)
    return [
        normalize_coord(left, scene.width, step, snap),
        normalize_coord(top, scene.height, step, snap),
        normalize_coord(right, scene.width, step, snap),
        normalize_coord(bottom, scene.height, step, snap),
    ]


def crop_zoom(image: Any, box: list[int], size: tuple[int, int]) -> Any:
    """Crop ``image`` to a [0,1000) box and enlarge it to ``size`` (what a zoom tool returns)."""
    w, h = image.size
    x1, y1, x2, y2 = box
    region = (
        x1 * w // 1000,
        y1 * h // 1000,
        max(x1 * w // 1000 + 1, x2 * w // 1000),
        max(y1 * h // 1000 + 1, y2 * h // 1000),
    )
    return image.crop(region).resize(size)


def _scene_with_tiny(rng: random.Random, config: DataConfig) -> Scene:
    scene_cfg = replace(config.scene, tiny_prob=max(config.scene.tiny_prob, 0.5))
    scene = random_scene(rng, scene_cfg)
    for _ in range(20):
        if any(o.size == "tiny" for o in scene.objects):
            break
        scene = random_scene(rng, scene_cfg)
    return scene


def tool_sample(rng: random.Random, builder: SampleBuilder, config: DataConfig) -> None:
    """Add one tool-use (or deliberately tool-free) turn to ``builder``."""
    from qvl_agent.data.synthetic import picture_header, plural, vqa_question, where

    kinds = list(TOOL_KINDS)
    kind = rng.choices(kinds, weights=[TOOL_KINDS[k] for k in kinds])[0]

    if kind == "zoom":
        scene = _scene_with_tiny(rng, config)
        tiny = [o for o in scene.objects if o.size == "tiny"]
        obj = rng.choice(tiny) if tiny else None
        position = scene.position_of(obj) if obj else ""
        if obj and sum(scene.position_of(o) == position for o in tiny) == 1:
            path = builder.picture(scene)
            box = _zoom_box(scene, obj, config.coord_step, config.coord_snap)
            crop = crop_zoom(builder.images[path], box, (scene.width, scene.height))
            crop_path = builder.picture(None, crop, tag="-zoom")
            if obj.is_text:
                question, answer = f"What does the tiny word {where(position)} say?", obj.text or ""
            else:
                question, answer = f"What shape is the tiny object {where(position)}?", obj.shape
            thought = f"The object {where(position)} is too small to see clearly. I will zoom in on it."
            user, assistant = react_episode(
                picture_header([path]) + question,
                thought,
                "zoom",
                {"image": 1, "box": box},
                image_observation(2, crop_path),
                answer,
            )
            builder.turns += [{"from": "user", "value": user}, {"from": "assistant", "value": assistant}]
            return
        kind = "calculator"

    if kind == "calculator":
        if rng.random() < 0.3:
            a, b = random_scene(rng, config.scene), random_scene(rng, config.scene)
            header = picture_header([builder.picture(a), builder.picture(b)])
            na, nb = len(a.objects), len(b.objects)
            question = "Multiply the number of objects in Picture 1 by the number of objects in Picture 2."
            counts = (
                f"I count the objects in Picture 1: {na}, and in Picture 2: {nb}."
                if config.calculator_thought == "name_first"
                else f"Picture 1 has {na} objects and Picture 2 has {nb}."
            )
            thought = f"{counts} I will compute {na}*{nb} with the calculator."
            expression, result = f"{na}*{nb}", na * nb
        else:
            scene = random_scene(rng, config.scene)
            header = picture_header([builder.picture(scene)])
            s1, s2 = (
                rng.sample(list(config.scene.shapes), 2)
                if len(config.scene.shapes) > 1
                else (config.scene.shapes[0],) * 2
            )
            n1 = sum(o.shape == s1 for o in scene.objects)
            n2 = sum(o.shape == s2 for o in scene.objects)
            p, q = rng.randint(2, 9), rng.randint(2, 9)
            question = f"Each {s1} is worth {p} points and each {s2} is worth {q} points. How many points are there in total?"
            counts = (
                f"I count the {plural(s1)}: {n1}, and the {plural(s2)}: {n2}."
                if config.calculator_thought == "name_first"
                else f"I count {n1} {plural(s1) if n1 != 1 else s1} and {n2} {plural(s2) if n2 != 1 else s2}."
            )
            thought = f"{counts} I will compute {n1}*{p}+{n2}*{q} with the calculator."
            expression, result = f"{n1}*{p}+{n2}*{q}", n1 * p + n2 * q
        user, assistant = react_episode(
            header + question, thought, "calculator", {"expression": expression}, str(result), str(result)
        )
        builder.turns += [{"from": "user", "value": user}, {"from": "assistant", "value": assistant}]
        return

    scene = random_scene(rng, config.scene)
    header = picture_header([builder.picture(scene)])
    question, answer = vqa_question(rng, scene, config)
    builder.turns += [
        {"from": "user", "value": react_query(header + question)},
        {"from": "assistant", "value": DIRECT_THOUGHT + answer},
    ]
