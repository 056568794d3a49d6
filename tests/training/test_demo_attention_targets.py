"""The demo recipe's attention supervision (``recipes/demo/attention_targets.py``) points at the right tokens.

Three things must hold for the loss to teach binding rather than noise: each turn's objects are the ones its
question/answer names; the query and key positions land on the answer's box tokens and on the image tokens of
those objects' cells; and the attention it scores is the attention the model really computes.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "demo"
sys.path.insert(0, str(RECIPE))

from attention_targets import (  # noqa: E402
    BOX,
    FUNCTION_WORDS,
    AttentionSupervision,
    count_targets,
    count_turns,
    picture_targets,
    query_targets,
    question_targets,
    stack_pairs,
    thought_count_targets,
    thought_counts,
    turn_objects,
)
from demo_data import MixSpec, dense_sample  # noqa: E402

from qvl_agent.training.encoding import collate, encode_conversation  # noqa: E402
from qvl_agent.training.trainer import TrainConfig, build_model  # noqa: E402

GRID = 8
SMALL = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "kv_channels": 16,
    "intermediate_size": 64,
    "seq_length": 2048,
    "visual": {
        "heads": 2,
        "image_size": 64,
        "layers": 1,
        "mlp_ratio": 2.0,
        "output_dim": 32,
        "patch_size": 8,
        "width": 16,
        "n_queries": GRID * GRID,
    },
}


def samples(questions: dict[str, float], kinds: dict[str, float] | None = None, n: int = 20, **mix):
    spec = MixSpec(kinds=kinds or {"single": 1.0}, questions=questions, min_turns=3, max_turns=5, **mix)
    return [dense_sample(i, "train", 7, spec) for i in range(n)]


def test_a_grounding_turn_targets_the_cell_holding_the_centre_of_its_answer_box() -> None:
    checked = 0
    for sample in samples({"grounding": 1.0}):
        for turn, targets in enumerate(turn_objects(sample, GRID)):
            answer = sample.conversations[2 * turn + 1]["value"]
            if not (m := BOX.search(answer)):
                continue
            x1, y1, x2, y2 = (int(v) for v in m.groups())
            assert len(targets) == 1, answer
            path, cell = targets[0]
            assert path == next(iter(sample.images))
            row, col = divmod(cell, GRID)
            # from the box text alone (coordinates in [0,1000)); rounding may move a centre on a cell edge by one
            assert abs(row - (y1 + y2) / 2000 * GRID) <= 1 and abs(col - (x1 + x2) / 2000 * GRID) <= 1
            checked += 1
    assert checked >= 40


@pytest.mark.parametrize("grid", [8, 12])
def test_spread_2_targets_the_2x2_cells_whose_centres_surround_the_object_centre(grid: int) -> None:
    checked = 0
    for sample in samples({"grounding": 1.0}):
        centres = turn_objects(sample, grid)
        for turn, targets in enumerate(turn_objects(sample, grid, spread=2)):
            assert len(targets) == 4 * len(centres[turn])
            for k, (path, centre) in enumerate(centres[turn]):
                block = [cell for p, cell in targets[4 * k : 4 * k + 4] if p == path]
                rows, cols = {c // grid for c in block}, {c % grid for c in block}
                assert len(block) == 4 and len(rows) == 2 and len(cols) == 2  # a 2x2 block
                assert max(rows) - min(rows) == 1 and max(cols) - min(cols) == 1
                assert centre in block  # it holds the centre's own cell
                checked += 1
    assert checked >= 40


def test_questions_about_no_particular_object_have_no_targets_and_counts_target_every_match() -> None:
    seen = set()
    for sample in samples({"vqa": 1.0, "caption": 0.3}, n=40):
        scene = next(iter(sample.scene_of.values()))
        for turn, targets in enumerate(turn_objects(sample, GRID)):
            question = sample.conversations[2 * turn]["value"].rsplit("</img>\n", 1)[-1]
            if question.startswith("How many objects"):
                assert len(targets) == len(scene.objects)
                seen.add("count")
            elif question.startswith(("Describe", "What is in this picture")):
                assert targets == []
                seen.add("caption")
            elif question.startswith("Is there"):
                assert (len(targets) > 0) == (sample.conversations[2 * turn + 1]["value"] == "yes")
                seen.add("exists")
    assert seen == {"count", "caption", "exists"}


def test_two_picture_questions_target_the_picture_they_name() -> None:
    checked = 0
    for sample in samples({"vqa": 1.0}, kinds={"multi": 1.0}):
        paths = list(sample.images)
        for turn, targets in enumerate(turn_objects(sample, GRID)):
            question = sample.conversations[2 * turn]["value"]
            if m := re.search(r"in Picture (\d)", question):
                assert {p for p, _ in targets} <= {paths[int(m[1]) - 1]}
                checked += bool(targets)
    assert checked >= 10


def test_tool_episodes_target_the_tiny_object_to_zoom_on_and_the_shapes_to_count() -> None:
    from qvl_agent.data.synthetic import where

    seen = set()
    for sample in samples({"vqa": 1.0}, kinds={"tools": 1.0}, n=60):
        scenes = [sample.scene_of[p] for p in sample.images if p in sample.scene_of]
        (targets,) = turn_objects(sample, GRID)
        question = sample.conversations[0]["value"].rsplit("</img>\n", 1)[-1]
        cells = sorted(c for _, c in targets)
        if m := re.match(r"What (?:shape is the tiny object|does the tiny word) (.+?)(?: say)?\?", question):
            # exactly the one tiny object the episode zooms on (the generator asks only about a unique one)
            tiny = [
                o for o in scenes[0].objects if o.size == "tiny" and where(scenes[0].position_of(o)) == m[1]
            ]
            assert len(tiny) == 1 and len(targets) == 1
            x1, y1, x2, y2 = tiny[0].box
            row, col = divmod(cells[0], GRID)
            centre = ((y1 + y2) / 2 / scenes[0].height * GRID, (x1 + x2) / 2 / scenes[0].width * GRID)
            assert abs(row - centre[0]) <= 1 and abs(col - centre[1]) <= 1
            seen.add("zoom")
        elif m := re.match(r"Each (\w+) is worth", question):
            shapes = re.findall(r"each (\w+) is worth", question, flags=re.I)
            assert len(targets) == sum(o.shape in shapes and not o.is_text for o in scenes[0].objects)
            seen.add("points")
        elif question.startswith("Multiply the number of objects"):
            assert {p for p, _ in targets} <= set(sample.images) and len(targets) == sum(
                len(s.objects) for s in scenes
            )
            seen.add("multiply")
    assert seen == {"zoom", "points", "multiply"}


def test_only_the_call_of_a_react_answer_is_supervised_not_the_observation_or_final_answer(
    tiny_model,
) -> None:
    _, tokenizer = tiny_model
    checked = 0
    for sample in samples({"vqa": 1.0}, kinds={"tools": 1.0}, n=30):
        enc = encode_conversation(tokenizer, sample.conversations)
        pairs = query_targets(
            enc.input_ids, enc.labels, enc.image_refs, turn_objects(sample, GRID), tokenizer, 8
        )
        answer = sample.conversations[1]["value"]
        if not pairs or "\nObservation:" not in answer:
            continue
        predicted = tokenizer.decode([enc.input_ids[q + 1] for q, _ in pairs])
        # the call, up to the "Observation:" the model writes to hand over to the tool
        call = answer.split("\nObservation:")[0] + "\nObservation:"
        assert predicted == call
        assert "Final Answer" not in predicted
        checked += 1
    assert checked >= 5


def test_each_answer_gathers_the_content_words_of_its_own_question(tiny_model) -> None:
    _, tokenizer = tiny_model
    seen = set()
    for kinds in ({"single": 1.0}, {"multi": 1.0}, {"tools": 1.0}):
        for sample in samples({"grounding": 1.0, "vqa": 1.0}, kinds=kinds, n=8):
            enc = encode_conversation(tokenizer, sample.conversations)
            pairs = query_targets(
                enc.input_ids, enc.labels, enc.image_refs, turn_objects(sample, GRID), tokenizer, 8
            )
            if not pairs:
                continue
            gathered = question_targets(enc.input_ids, pairs, tokenizer, 24)
            assert gathered and {q for q, _ in gathered} <= {q for q, _ in pairs}
            for query, keys in gathered:
                words = [tokenizer.decode([enc.input_ids[k]]).strip().lower() for k in keys]
                assert all(w not in FUNCTION_WORDS for w in words)
                assert (
                    max(keys) < query and enc.labels[max(keys)] == -100
                )  # the user's words, not the answer's
                text = tokenizer.decode(enc.input_ids[min(keys) : max(keys) + 1])
                assert "<|im_end|>" not in text and "</img>" not in text  # one question, after its pictures
                if m := re.search(r"colour is the (\w+) in Picture (\d)", text):
                    assert words[-2:] == [m[1], m[2]]
                    seen.add("colour in picture k")
                seen.add(next(iter(kinds)))
    assert seen == {"single", "multi", "tools", "colour in picture k"}


def test_every_image_token_looks_at_the_number_of_its_picture(tiny_model) -> None:
    _, tokenizer = tiny_model
    (sample,) = samples({"vqa": 1.0}, kinds={"multi": 1.0}, n=1)
    enc = encode_conversation(tokenizer, sample.conversations)
    pairs = picture_targets(enc.input_ids, tokenizer)
    assert len(pairs) == 2 * GRID * GRID
    starts = [i for i, t in enumerate(enc.input_ids) if t == tokenizer.img_start_id]
    for number, start in enumerate(starts, 1):
        span = [(q, k) for q, k in pairs if start < q <= start + GRID * GRID]
        assert [q for q, _ in span] == list(range(start + 1, start + 1 + GRID * GRID))
        (key,) = {k[0] for _, k in span}
        assert tokenizer.decode(enc.input_ids[key - 2 : key + 1]) == f"Picture {number}"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    torch.manual_seed(0)
    model, tokenizer = build_model(
        TrainConfig(output_dir=str(tmp_path_factory.mktemp("m")), model_config=SMALL)
    )
    return model.float(), tokenizer


def encoded_batch(tokenizer, questions):
    rows, encoded, pictures = [], [], []
    for sample in samples(questions, n=3):
        enc = encode_conversation(tokenizer, sample.conversations)
        encoded.append(enc)
        pictures += [sample.images[r] for r in enc.image_refs]
        rows.append(
            query_targets(enc.input_ids, enc.labels, enc.image_refs, turn_objects(sample, GRID), tokenizer, 8)
        )
    return encoded, pictures, rows


def test_queries_predict_the_box_and_keys_sit_inside_the_image_span(tiny_model) -> None:
    _, tokenizer = tiny_model
    encoded, _, rows = encoded_batch(tokenizer, {"grounding": 1.0})
    ref_end, box_end = tokenizer.special_tokens["</ref>"], tokenizer.special_tokens["</box>"]
    for enc, pairs in zip(encoded, rows, strict=True):
        ids = enc.input_ids
        # every box the assistant writes: the tokens after </ref> up to and including </box>
        box_tokens = {
            p
            for i, t in enumerate(ids)
            if t == ref_end and enc.labels[i] != -100
            for p in range(i + 1, ids.index(box_end, i) + 1)
        }
        assert box_tokens and {q + 1 for q, _ in pairs} == box_tokens
        start = ids.index(tokenizer.img_start_id)
        for _, keys in pairs:
            assert len(keys) == 1 and start < keys[0] <= start + GRID * GRID


def test_the_scored_attention_is_the_attention_the_model_computes(tiny_model) -> None:
    model, tokenizer = tiny_model
    encoded, pictures, rows = encoded_batch(tokenizer, {"grounding": 1.0, "vqa": 1.0})
    batch = collate(encoded, tokenizer.eod_id)
    tensors = stack_pairs(rows, 8)
    head = 1
    watch = AttentionSupervision(model, [1], head)
    mixed: list[torch.Tensor] = []  # the heads' outputs, before c_proj mixes them
    hook = model.transformer.h[1].attn.c_proj.register_forward_pre_hook(lambda m, a: mixed.append(a[0]))
    with torch.no_grad(), watch:
        model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            pixel_values=model.transformer.visual.image_processor(pictures),
        )
    hook.remove()
    (log_p,) = watch.log_attention(tensors["attn_query"])
    attn = model.transformer.h[1].attn
    hidden = watch.inputs[0][0]
    d = attn.head_dim
    v_w = attn.c_attn.weight[2 * attn.hidden_size + head * d :][:d]
    v_b = attn.c_attn.bias[2 * attn.hidden_size + head * d :][:d]
    values = hidden @ v_w.T + v_b  # [B, S, d]
    r, q = tensors["attn_query"][:, 0], tensors["attn_query"][:, 1]
    rebuilt = torch.einsum("ns,nsd->nd", log_p.exp(), values[r])
    torch.testing.assert_close(rebuilt, mixed[0][r, q, head * d : (head + 1) * d], atol=1e-5, rtol=1e-4)
    loss, metrics = watch.loss(tensors["attn_query"], tensors["attn_keys"])
    assert loss.item() > 0 and 0 < metrics["attn_mass"].item() < 1


def test_counting_turns_target_position_0_then_every_matching_object(tiny_model) -> None:
    _, tokenizer = tiny_model
    seen = set()
    for kinds in ({"single": 1.0}, {"multi": 1.0}, {"tools": 1.0}):
        for sample in samples({"vqa": 1.0}, kinds=kinds, n=40):
            enc = encode_conversation(tokenizer, sample.conversations)
            counts = count_turns(sample, GRID)
            turns = turn_objects(sample, GRID)
            paths = list(sample.images)
            pairs = count_targets(enc.input_ids, enc.labels, enc.image_refs, counts, tokenizer, 10)
            for turn, matches in enumerate(counts):
                question = sample.conversations[2 * turn]["value"].rsplit("</img>\n", 1)[-1]
                answer = sample.conversations[2 * turn + 1]["value"]
                if matches is None:
                    assert "tools" in kinds or not re.match(
                        r"How many|Is there|Which picture has an? ", question
                    )
                    continue
                # one entry per object, repeated when two share a cell; the same cells as the binding targets
                assert sorted(set(matches)) == sorted(turns[turn])
                if question.startswith("How many"):
                    assert len(matches) == int(answer)
                    if m := re.search(r"in Picture (\d)", question):
                        assert {p for p, _ in matches} <= {paths[int(m[1]) - 1]}
                elif question.startswith("Is there"):
                    assert answer == ("yes" if matches else "no")
                else:
                    having = {f"Picture {paths.index(p) + 1}" for p, _ in matches}
                    assert answer == {0: "neither", 2: "both"}.get(len(having), next(iter(having), ""))
                seen.add((next(iter(kinds)), question.split()[0], min(len(matches), 2)))
            for q, keys in pairs:
                assert keys[0] == 0
                starts = [i + 1 for i, t in enumerate(enc.input_ids) if t == tokenizer.img_start_id]
                assert all(any(s <= k < s + GRID * GRID for s in starts) for k in keys[1:])
                assert enc.labels[q + 1] != -100  # it predicts the answer
            # the counting turns are left out of the object-binding targets
            skip = frozenset(i for i, c in enumerate(counts) if c is not None)
            bound = query_targets(enc.input_ids, enc.labels, enc.image_refs, turns, tokenizer, 8, skip)
            assert not {q for q, _ in bound} & {q for q, _ in pairs}
    for form in [("single", "How", 0), ("single", "How", 2), ("single", "Is", 0), ("single", "Is", 1)]:
        assert form in seen
    assert {("multi", "How", 1), ("multi", "Which", 0), ("multi", "Which", 1)} <= seen


def test_uniform_supervision_scores_an_even_spread_and_counts_a_repeated_key_once(tiny_model) -> None:
    model, tokenizer = tiny_model
    encoded, pictures, _ = encoded_batch(tokenizer, {"vqa": 1.0})
    batch = collate(encoded, tokenizer.eod_id)
    start = encoded[0].input_ids.index(tokenizer.img_start_id)
    query = torch.tensor([[0, start + GRID * GRID + 2], [1, start + GRID * GRID + 3]])
    # row 0: position 0 and one object; row 1: position 0 and two objects in one cell (a repeated key)
    keys = torch.tensor([[0, start + 5, -1], [0, start + 9, start + 9]])
    uniform = AttentionSupervision(model, [0, 1], 0, uniform=True)
    mass = AttentionSupervision(model, [0, 1], 0)
    with torch.no_grad(), uniform, mass:
        model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            pixel_values=model.transformer.visual.image_processor(pictures),
        )
    loss, metrics = uniform.loss(query, keys)
    layers = uniform.log_attention(query)
    expected = -sum(
        (lp[0, 0] + lp[0, start + 5]) / 2 + (lp[1, 0] + 2 * lp[1, start + 9]) / 3 for lp in layers
    ) / (2 * len(layers))
    torch.testing.assert_close(loss, expected)
    on_keys = [
        (lp[0, 0].exp() + lp[0, start + 5].exp() + lp[1, 0].exp() + lp[1, start + 9].exp()) / 2
        for lp in layers
    ]
    torch.testing.assert_close(metrics["attn_mass"], sum(on_keys) / len(on_keys))
    # the mass loss sees the same keys, counting the repeated one once
    mass_loss, mass_metrics = mass.loss(query, keys)
    torch.testing.assert_close(mass_metrics["attn_mass"], metrics["attn_mass"])
    assert mass_loss < loss  # an even spread is a stricter target than mass on the keys


def test_counting_turns_keep_their_binding_targets_unless_counting_shares_the_binding_head(
    tiny_model,
) -> None:
    from train import ChatData

    _, tokenizer = tiny_model
    spec = MixSpec(kinds={"single": 1.0}, questions={"vqa": 1.0}, min_turns=4, max_turns=6)
    binding = {"layers": [1, 2], "head": 0, "weight": 0.5}

    def batch(count_head: int) -> dict:
        attention = binding | {"count": {"layers": [2], "head": count_head, "weight": 0.5, "uniform": True}}
        data = ChatData(
            7, spec, tokenizer, lambda pictures: torch.zeros(len(pictures)), GRID, 4, 2048, None, attention
        )
        return data[3]

    shared, own = batch(0), batch(3)
    rows = lambda b, prefix: {tuple(x) for x in b[f"{prefix}_query"].tolist()}  # noqa: E731
    assert rows(shared, "count") == rows(own, "count") and rows(own, "count")
    # on its own head, counting adds targets; on the binding head, its turns leave `attn`
    assert rows(shared, "attn") < rows(own, "attn")
    assert not rows(shared, "attn") & rows(shared, "count")
    assert rows(own, "attn") & rows(own, "count")


def test_the_config_spread_gives_each_supervised_answer_four_cells_per_object(tiny_model) -> None:
    from train import ChatData

    _, tokenizer = tiny_model
    spec = MixSpec(kinds={"single": 1.0}, questions={"grounding": 1.0}, min_turns=4, max_turns=6)

    def batch(spread: int) -> dict:
        attention = {"layers": [1, 2], "head": 0, "weight": 0.5, "max_targets": 32, "spread": spread}
        data = ChatData(
            7, spec, tokenizer, lambda pictures: torch.zeros(len(pictures)), GRID, 4, 2048, None, attention
        )
        return data[5]

    centre, block = batch(1), batch(2)
    # the same answers are supervised; each names one object, so 1 key becomes 4
    assert torch.equal(centre["attn_query"], block["attn_query"]) and len(centre["attn_query"])
    assert ((centre["attn_keys"] >= 0).sum(1) == 1).all()
    assert ((block["attn_keys"] >= 0).sum(1) == 4).all()
    pairs = zip(centre["attn_keys"][:, 0].tolist(), block["attn_keys"].tolist(), strict=True)
    assert all(c in b for c, b in pairs)


@pytest.mark.parametrize(
    ("style", "written_count"),
    [("count_first", r"(?:count|and|has) (\d+)"), ("name_first", r": (\d+)")],
)
def test_each_count_of_a_calculator_thought_looks_at_its_own_kind_and_gathers_its_name(
    tiny_model, style: str, written_count: str
) -> None:
    _, tokenizer = tiny_model
    seen = set()
    # repeated shapes, so that counts of 2 and more come up
    mix = {"calculator_thought": style, "scene": {"repeat_prob": 0.6}}
    for sample in samples({"vqa": 1.0}, kinds={"tools": 1.0}, n=60, **mix):
        counts = thought_counts(sample, GRID)
        question = sample.conversations[0]["value"].rsplit("</img>\n", 1)[-1]
        if not question.startswith(("Each ", "Multiply")):
            assert counts == []
            continue
        enc = encode_conversation(tokenizer, sample.conversations)
        found = thought_count_targets(enc.input_ids, enc.labels, enc.image_refs, counts, tokenizer)
        thought = sample.conversations[1]["value"].split("\n")[0]
        written = [int(n) for n in re.findall(written_count, thought)]
        assert len(written) == 2, thought
        # one query per count the thought writes, predicting that count's digit, inside the supervised call
        assert [int(tokenizer.decode([enc.input_ids[q + 1]])) for q, _, _ in found] == written
        assert all(enc.labels[q + 1] != -100 for q, _, _ in found)
        starts = {ref: enc.input_ids.index(tokenizer.img_start_id, 0) + 1 for ref in enc.image_refs[:1]}
        for (query, keys, named), (name, objects), n in zip(found, counts, written, strict=True):
            # the image keys are the cells of exactly the objects counted, one per object
            assert len(objects) == len(keys) == n
            assert all(k < query for k in keys)
            if question.startswith("Each "):
                assert [k - starts[enc.image_refs[0]] for k in keys] == sorted(c for _, c in objects)
            # the question word that names what is counted: the shape, or the picture's number
            (word,) = named
            assert tokenizer.decode([enc.input_ids[word]]).strip() == name and enc.labels[word] == -100
            seen.add((question.split()[0], min(n, 2)))
    assert seen == {("Each", 0), ("Each", 1), ("Each", 2), ("Multiply", 1), ("Multiply", 2)}


def test_thought_counts_replace_the_calls_shared_target_at_each_count_and_nowhere_else(tiny_model) -> None:
    from train import ChatData

    _, tokenizer = tiny_model
    spec = MixSpec(kinds={"tools": 1.0}, questions={"vqa": 1.0})
    binding = {
        "layers": [1, 2],
        "head": 0,
        "weight": 0.5,
        "question": {"layers": [0], "head": 1, "weight": 0.5},
    }

    def batch(thought: bool) -> dict:
        attention = binding | {"thought_counts": thought}
        data = ChatData(
            7, spec, tokenizer, lambda pictures: torch.zeros(len(pictures)), GRID, 8, 2048, None, attention
        )
        return data[2]

    plain, split = batch(False), batch(True)

    def pairs(b: dict, prefix: str) -> dict[tuple[int, int], frozenset[int]]:
        keys = [frozenset(k for k in row if k >= 0) for row in b[f"{prefix}_keys"].tolist()]
        return dict(zip(map(tuple, b[f"{prefix}_query"].tolist()), keys, strict=True))

    for prefix in ("attn", "question"):
        before, after = pairs(plain, prefix), pairs(split, prefix)
        changed = {q for q in before.keys() | after.keys() if before.get(q) != after.get(q)}
        assert changed  # the batch has calculator episodes
        # only the positions predicting a count's digit change; each now targets a subset of the call's keys
        ids = split["input_ids"]
        assert all(tokenizer.decode([int(ids[r, p + 1])]).isdigit() for r, p in changed)
        assert all(after[q] < before[q] for q in changed if q in after and q in before)


def test_with_a_counting_head_each_thought_count_spreads_over_position_0_and_one_key_per_object(
    tiny_model,
) -> None:
    from train import ChatData

    _, tokenizer = tiny_model
    spec = MixSpec(kinds={"tools": 1.0}, questions={"vqa": 1.0})
    count = {"layers": [1], "head": 1, "weight": 0.5, "uniform": True}
    attention = {"layers": [1], "head": 0, "weight": 0.5, "count": count, "thought_counts": True}
    data = ChatData(
        7, spec, tokenizer, lambda pictures: torch.zeros(len(pictures)), GRID, 8, 2048, None, attention
    )
    seen = set()
    for step in range(3):
        batch = data[step]
        ids = batch["input_ids"]
        for (row, query), keys in zip(
            batch["count_query"].tolist(), batch["count_keys"].tolist(), strict=True
        ):
            keys = [k for k in keys if k >= 0]
            # tool episodes have no "How many" turns: every counting target here is a thought's count
            n = int(tokenizer.decode([int(ids[row, query + 1])]))
            assert keys[0] == 0 and len(keys) == n + 1 and all(0 < k < query for k in keys[1:])
            seen.add(min(n, 2))
    assert seen == {0, 1, 2}


def test_box_questions_find_their_object_whichever_way_coordinates_are_snapped() -> None:
    checked = 0
    for snap in ("down", "nearest"):
        for sample in samples({"referring": 1.0}, coord_step=10, coord_snap=snap):
            for turn, targets in enumerate(turn_objects(sample, GRID, 10, coord_snap=snap)):
                if BOX.search(sample.conversations[2 * turn]["value"]):
                    assert len(targets) == 1
                    checked += 1
    assert checked >= 80
