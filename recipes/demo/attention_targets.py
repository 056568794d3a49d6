"""Attention supervision: tell one head where to look while the answer names or describes an object.

Grounding fails when the language model cannot *bind* a name ("the yellow circle") to the image token that
holds that object, even though the token carries its colour, shape and box (the dense head reads them). Here
the binding is supervised directly: for every answer about particular objects (a box for a name, a name for a
box, its colour, size, position, whether it exists, how many there are, which picture has it; in a ReAct
episode, the tiny object to zoom on or the shapes to count before calling the calculator), the positions that
predict the answer (for a tool episode, its call) attend, in one head of a few chosen layers, to the image
tokens of the cells holding those objects' centres. The loss is ``-log`` of the attention mass on those
tokens. Nothing in the model changes; the head is only trained to do early what it would otherwise have to
discover.

:func:`turn_objects` reads which objects each assistant turn is about from the sample itself (its scenes and
the question/answer text the generator wrote); :func:`query_targets` turns that into (row, query position,
key positions) triples after encoding; :class:`AttentionSupervision` computes the loss from the inputs each
supervised attention module receives.
"""

from __future__ import annotations

import re

import torch
from dense_targets import cell_of, cells_around
from torch import nn

from qvl_agent.data.scenes import Scene, SceneObject
from qvl_agent.data.synthetic import Sample, plural, referring_expression, where
from qvl_agent.training.encoding import IGNORE_INDEX

BOX = re.compile(r"<box>\((\d+),(\d+)\),\((\d+),(\d+)\)</box>")
PICTURE = re.compile(r"in Picture (\d)")
# the calculator questions (react_samples.tool_sample): two shapes' points, or the two pictures' object counts
POINTS = re.compile(r"Each (\w+) is worth \d+ points and each (\w+) is worth")
MULTIPLY = "Multiply the number of objects"


def _objects_named(
    question: str, scene: Scene, coord_step: int, coord_snap: str = "down"
) -> list[SceneObject]:
    """The objects of ``scene`` a question (or its answer's box) is about, as seen in that one picture."""
    shapes = [o for o in scene.objects if not o.is_text]
    if m := re.match(r"What (?:shape is the tiny object|does the tiny word) (.+?)(?: say)?\?", question):
        return [o for o in scene.objects if o.size == "tiny" and where(scene.position_of(o)) == m[1]]
    if m := POINTS.match(question):
        return [o for o in shapes if o.shape in (m[1], m[2])]
    if question.startswith((MULTIPLY, "Which picture has more objects")):
        return list(scene.objects)
    if m := re.match(r"Which picture has more (\w+)\?", question):
        return [o for o in shapes if plural(o.shape) == m[1]]
    if m := BOX.search(question):
        box = tuple(int(v) for v in m.groups())
        return [o for o in scene.objects if scene.norm_box(o, coord_step, coord_snap) == box]
    if m := re.match(r"What colour is the (\w+)", question):
        return [o for o in shapes if o.shape == m[1]]
    if m := re.match(r"What shape is the (\w+) object", question):
        return [o for o in shapes if o.colour == m[1]]
    if m := re.match(r"What word is written in (\w+)", question):
        return [o for o in scene.objects if o.is_text and o.colour == m[1]]
    if m := re.match(r"(?:Where is|How big is) (.+?)\?", question):
        return [o for o in scene.objects if referring_expression(scene, o) == m[1]]
    if m := re.match(r"(?:Is there|Which picture has) a (\w+) (\w+)\?", question):
        return [o for o in scene.objects if o.colour == m[1] and o.shape == m[2]]
    if m := re.match(r"How many (\w+) shapes are", question):
        return [o for o in shapes if o.colour == m[1]]
    if question.startswith("How many objects are"):
        return list(scene.objects)
    if m := re.match(r"How many (\w+) are", question):
        return [o for o in scene.objects if plural(o.shape) == m[1]]
    return []


def _pictures_asked(question: str, pictures: list[str]) -> list[str]:
    """The pictures whose objects a question is about: the one it names, else all (or the only one)."""
    if question.startswith(("Which picture has", "Multiply the number")):
        return pictures
    if m := PICTURE.search(question):
        return [pictures[int(m[1]) - 1]] if int(m[1]) <= len(pictures) else []
    return pictures[:1] if len(pictures) == 1 else []


def turn_objects(
    sample: Sample, grid: int, coord_step: int = 1, spread: int = 1, coord_snap: str = "down"
) -> list[list[tuple[str, int]]]:
    """For each assistant turn: the ``(picture path, cell)`` of every object it is about (empty: none);
    ``spread`` 2 gives each object the 2x2 cells around its centre (:func:`dense_targets.cells_around`)."""
    pictures = [p for p in sample.images if p in sample.scene_of]
    out: list[list[tuple[str, int]]] = []
    for i in range(0, len(sample.conversations) - 1, 2):
        question = sample.conversations[i]["value"].rsplit("</img>\n", 1)[-1]
        answer = sample.conversations[i + 1]["value"]
        if not pictures:
            out.append([])
            continue
        # a grounding answer's box names its object exactly; otherwise the question says what it is about
        text = answer if BOX.search(answer) and not BOX.search(question) else question
        targets = []
        for path in _pictures_asked(question, pictures):
            scene = sample.scene_of[path]
            for o in _objects_named(text, scene, coord_step, coord_snap):
                targets += [(path, cell) for cell in cells_around(scene, o, grid, spread)]
        out.append(targets)
    return out


def image_span_starts(input_ids: list[int], image_refs: list[str], tokenizer) -> dict[str, int]:
    """The position of image token 0 of each picture (its ``<img>`` sits one before)."""
    starts: dict[str, int] = {}
    i = 0
    for ref in image_refs:
        i = input_ids.index(tokenizer.img_start_id, i)
        starts.setdefault(ref, i + 1)
        i += 1
    return starts


def answer_queries(input_ids: list[int], labels: list[int], tokenizer) -> list[range]:
    """For each assistant turn: the positions that predict its answer.

    For a grounding answer, only those predicting ``<box>(x1,y1),(x2,y2)</box>``; otherwise those predicting
    the answer, not the closing ``<|im_end|>``. A ReAct answer is split by its masked observation: only the run
    before it (the call) counts.
    """
    runs, start = [], None
    for pos, label in enumerate([*labels, IGNORE_INDEX]):
        if label != IGNORE_INDEX and start is None:
            start = pos
        elif label == IGNORE_INDEX and start is not None:
            runs.append((start, pos))
            start = None
    ref_end = tokenizer.special_tokens["</ref>"]
    box_end = tokenizer.special_tokens["</box>"]
    out: list[range] = []
    opens_turn = True
    for first, stop in runs:
        ends_turn = labels[stop - 1] == tokenizer.im_end_id
        if opens_turn:
            answer = input_ids[first:stop]
            if ref_end in answer and box_end in answer:
                out.append(range(first + answer.index(ref_end), first + answer.index(box_end)))
            else:
                out.append(range(first - 1, stop - 2 if ends_turn else stop - 1))
        opens_turn = ends_turn
    return out


def query_targets(
    input_ids: list[int],
    labels: list[int],
    image_refs: list[str],
    turns: list[list[tuple[str, int]]],
    tokenizer,
    max_targets: int,
    skip: frozenset[int] = frozenset(),
) -> list[tuple[int, list[int]]]:
    """``(query position, key positions)`` pairs of one encoded conversation.

    The query positions are :func:`answer_queries` of each turn about objects (but the turns in ``skip``);
    the keys are the image tokens of its objects.
    """
    starts = image_span_starts(input_ids, image_refs, tokenizer)
    pairs: list[tuple[int, list[int]]] = []
    for turn, queries in enumerate(answer_queries(input_ids, labels, tokenizer)[: len(turns)]):
        keys = sorted({starts[path] + cell for path, cell in turns[turn] if path in starts})
        if turn not in skip and keys and len(keys) <= max_targets:
            pairs += [(q, keys) for q in queries if q > max(keys)]
    return pairs


COUNTED = re.compile(r"How many |Is there a |Which picture has an? ")


def count_turns(sample: Sample, grid: int) -> list[list[tuple[str, int]] | None]:
    """For each assistant turn whose answer says how many objects match ("How many …", "Is there a …",
    "Which picture has a …"; not in a tool episode): the ``(picture path, cell)`` of every match, one entry per
    object (two in one cell: that cell twice; none: empty). Other turns: ``None``."""
    pictures = [p for p in sample.images if p in sample.scene_of]
    out: list[list[tuple[str, int]] | None] = []
    for i in range(0, len(sample.conversations) - 1, 2):
        question = sample.conversations[i]["value"].rsplit("</img>\n", 1)[-1]
        asked = _pictures_asked(question, pictures)
        if sample.task == "tools" or not COUNTED.match(question) or not asked:
            out.append(None)
            continue
        out.append(
            [
                (path, cell_of(sample.scene_of[path], o, grid))
                for path in asked
                for o in _objects_named(question, sample.scene_of[path], 1)
            ]
        )
    return out


def count_targets(
    input_ids: list[int],
    labels: list[int],
    image_refs: list[str],
    counts: list[list[tuple[str, int]] | None],
    tokenizer,
    max_targets: int,
) -> list[tuple[int, list[int]]]:
    """``(query position, key positions)`` of the :func:`count_turns`: position 0 (the conversation's first
    token, the same in every sample), then the image token of every match (repeated for two in one cell).

    Scored with ``uniform`` attention supervision, the head spreads its attention evenly over those keys, so
    position 0 gets 1/(n+1) of it: the head's output then says how many match (all of it for none), where
    attention over the matches alone gives their average, the same for one object as for four.
    """
    starts = image_span_starts(input_ids, image_refs, tokenizer)
    pairs: list[tuple[int, list[int]]] = []
    for turn, queries in enumerate(answer_queries(input_ids, labels, tokenizer)[: len(counts)]):
        if counts[turn] is None:
            continue
        keys = [0] + sorted(starts[path] + cell for path, cell in counts[turn] if path in starts)
        if len(keys) <= max_targets:
            pairs += [(q, keys) for q in queries]
    return pairs


# the word before a count in a calculator thought: "I count 2 squares and 0 stars", "Picture 1 has 3 objects",
# or with ``calculator_thought="name_first"`` the colon of "the squares: 2", "in Picture 1: 3"
COUNT_WORDS = frozenset({"count", "and", "has", ":"})


def thought_counts(sample: Sample, grid: int) -> list[tuple[str, list[tuple[str, int]]]]:
    """For a calculator episode, each count its thought writes, in order: the question's word that names what
    is counted (a shape, or a picture's number) and the ``(picture path, cell)`` of every object counted.

    "I count n1 s1 and n2 s2" (or "I count the s1s: n1, and the s2s: n2") counts the objects of shape s1, then
    those of s2; "Picture 1 has n objects and Picture 2 has m" (or "I count the objects in Picture 1: n, and in
    Picture 2: m") counts each picture's objects. Any other sample: empty.
    """
    if sample.task != "tools":
        return []
    pictures = [p for p in sample.images if p in sample.scene_of]
    question = sample.conversations[0]["value"].rsplit("</img>\n", 1)[-1]
    if m := POINTS.match(question):
        scene = sample.scene_of[pictures[0]]
        return [
            (shape, [(pictures[0], cell_of(scene, o, grid)) for o in scene.objects if o.shape == shape])
            for shape in m.groups()
        ]
    if question.startswith(MULTIPLY):
        return [
            (str(k), [(path, cell_of(sample.scene_of[path], o, grid)) for o in sample.scene_of[path].objects])
            for k, path in enumerate(pictures, 1)
        ]
    return []


def thought_count_targets(
    input_ids: list[int],
    labels: list[int],
    image_refs: list[str],
    counts: list[tuple[str, list[tuple[str, int]]]],
    tokenizer,
) -> list[tuple[int, list[int], list[int]]]:
    """``(query position, image keys, question keys)`` of each count in a calculator episode's thought.

    The query predicts the count's digit. Step 5 gives every position of the call one target, all the objects
    of both kinds counted, whose mass says nothing about how many there are of the kind being counted. Here the
    query gets that kind's objects alone (the image token of each, repeated when two share a cell; none when
    none are counted) and the one question word that names it.
    """
    if not counts:
        return []
    starts = image_span_starts(input_ids, image_refs, tokenizer)
    words = [token_word(tokenizer, t) for t in input_ids]
    call = answer_queries(input_ids, labels, tokenizer)[0]
    digits = [q for q in call if words[q + 1].isdigit() and not words[q] and words[q - 1] in COUNT_WORDS]
    content = next((k for end, k in reversed(question_words(input_ids, tokenizer)) if end < call[0]), [])
    out = []
    for query, (name, objects) in zip(digits, counts, strict=False):  # a truncated call has fewer
        keys = sorted(starts[path] + cell for path, cell in objects if path in starts)
        named = [k for k in content if words[k] == name][:1]
        out.append((query, keys, named))
    return out


# question words that name no object: the gather head should not spend its attention on them
FUNCTION_WORDS = frozenset(
    "what is the a an in of are there does say how which has have picture each and worth points find locate where"
    " give its bounding box".split()
)


_WORDS: dict[tuple[int, int], str] = {}


def token_word(tokenizer, token: int) -> str:
    """One token's text, stripped and lower-cased (cached: called for every token of every sample)."""
    key = (id(tokenizer), token)
    if key not in _WORDS:
        _WORDS[key] = tokenizer.decode([token], strict_image_spans=False).strip().lower()
    return _WORDS[key]


def question_words(input_ids: list[int], tokenizer) -> list[tuple[int, list[int]]]:
    """``(end, content positions)`` of each user turn: its question's tokens after its pictures (after the last
    ``Question:`` of a ReAct prompt) that are not :data:`FUNCTION_WORDS`."""
    im_start, im_end, img_end = tokenizer.im_start_id, tokenizer.im_end_id, tokenizer.img_end_id
    words = [token_word(tokenizer, t) for t in input_ids]
    questions: list[tuple[int, list[int]]] = []
    for start, token in enumerate(input_ids):
        if token != im_start or "".join(words[start + 1 : start + 3]) != "user":
            continue
        end = input_ids.index(im_end, start)
        first = start + 3
        for pos in range(start, end):
            if input_ids[pos] == img_end or (words[pos] == "question" and words[pos + 1] == ":"):
                first = pos + 2
        keys = [
            k
            for k in range(first, end)
            if any(c.isalnum() for c in words[k]) and words[k] not in FUNCTION_WORDS
        ]
        questions.append((end, keys))
    return questions


def question_targets(
    input_ids: list[int], pairs: list[tuple[int, list[int]]], tokenizer, max_targets: int
) -> list[tuple[int, list[int]]]:
    """``(query position, key positions)``: each supervised query gathers the content words of its question.

    A one-word answer ("purple") is predicted at the ``\n`` after ``assistant``, where nothing says which
    object was asked about; the object query of the next layer can only be as specific as what this position
    has gathered from the question by then. The keys are the question's tokens after its pictures (after the
    last ``Question:`` of a ReAct prompt) that are not :data:`FUNCTION_WORDS`: the shape, colour, size,
    quoted word, box digits and the picture number.
    """
    questions = question_words(input_ids, tokenizer)
    out = []
    for query, _ in pairs:
        keys = next((k for end, k in reversed(questions) if end < query), [])
        if keys and len(keys) <= max_targets:
            out.append((query, keys))
    return out


def picture_targets(input_ids: list[int], tokenizer) -> list[tuple[int, list[int]]]:
    """``(query position, [key])``: every image token looks at the number of its ``Picture k:`` label.

    Which picture an image token belongs to is otherwise only implicit (how far back it sits), and a
    two-picture question names the picture by number.
    """
    out = []
    for pos, token in enumerate(input_ids):
        if token != tokenizer.img_start_id or pos < 4:
            continue
        digit = pos - 3  # "Picture", " ", "k", ":", " ", <img>
        if (
            token_word(tokenizer, input_ids[digit - 2]) != "picture"
            or not token_word(tokenizer, input_ids[digit]).isdigit()
        ):
            continue
        stop = input_ids.index(tokenizer.img_end_id, pos)
        out += [(q, [digit]) for q in range(pos + 1, stop)]
    return out


def stack_pairs(
    rows: list[list[tuple[int, list[int]]]], max_targets: int, prefix: str = "attn"
) -> dict[str, torch.Tensor]:
    """Batch tensors: ``{prefix}_query`` [N, 2] (row, position), ``{prefix}_keys`` [N, max_targets] (-1 = none)."""
    queries = [(r, q) for r, pairs in enumerate(rows) for q, _ in pairs]
    keys = torch.full((len(queries), max_targets), -1, dtype=torch.long)
    n = 0
    for pairs in rows:
        for _, k in pairs:
            keys[n, : len(k)] = torch.tensor(k)
            n += 1
    return {f"{prefix}_query": torch.tensor(queries, dtype=torch.long).reshape(-1, 2), f"{prefix}_keys": keys}


def log_target_mass(log_p: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """``log`` of the attention mass [N] that log attention ``log_p`` [N, S] puts on ``keys`` [N, K] (-1 = none)."""
    return log_p.gather(1, keys.clamp(min=0)).masked_fill(keys < 0, float("-inf")).logsumexp(-1)


# the most keys per query of each supervised attention, unless the config says otherwise
MAX_TARGETS = {"attn": 8, "question": 24, "picture": 1, "count": 10}


def supervised_attentions(attention: dict | None) -> dict[str, dict]:
    """The config's ``joint.attention`` as ``{batch prefix: settings}``: ``attn`` (object binding, the
    top-level ``layers``/``head``/``weight``) and, where set, the ``question`` gather, ``picture`` labels and
    ``count`` (the counting turns; they leave ``attn`` only when both supervise the same head)."""
    if not attention:
        return {}
    return {"attn": attention} | {k: attention[k] for k in ("question", "picture", "count") if k in attention}


class AttentionSupervision:
    """Captures what the chosen attention modules receive and scores where one head looks.

    Use as a context manager around the forward pass, then call :meth:`loss` with the batch's
    ``attn_query``/``attn_keys``.
    """

    def __init__(self, model: nn.Module, layers: list[int], head: int, uniform: bool = False) -> None:
        """``uniform``: score the attention against an even spread over the keys (a repeated key counts as
        many times as it appears) instead of only the mass on them (:func:`count_targets`)."""
        self.blocks = [model.transformer.h[i].attn for i in layers]
        self.head, self.uniform = head, uniform
        self.inputs: list[tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]] = []
        self.hooks: list = []

    def __enter__(self) -> AttentionSupervision:
        self.inputs = []
        self.hooks = [b.register_forward_pre_hook(self._capture) for b in self.blocks]
        return self

    def __exit__(self, *exc) -> None:
        for h in self.hooks:
            h.remove()

    def _capture(self, module: nn.Module, args: tuple) -> None:
        self.inputs.append((args[0], args[1]))

    def log_attention(self, query: torch.Tensor) -> list[torch.Tensor]:
        """Per supervised layer: the head's log attention [N, S] at ``query`` (rows, positions; row-major)."""
        from qvl_agent.model.modeling_qwen import apply_rotary

        rows, positions = query[:, 0], query[:, 1]
        out = []
        for attn, (hidden, (cos, sin)) in zip(self.blocks, self.inputs, strict=True):
            d, h = attn.head_dim, self.head
            weight, bias = attn.c_attn.weight, attn.c_attn.bias
            k_off = attn.hidden_size + h * d
            hidden = hidden.float()  # bfloat16 under autocast
            q = hidden[rows, positions] @ weight[h * d : (h + 1) * d].T + bias[h * d : (h + 1) * d]
            q = apply_rotary(q[:, None, None], cos[rows, positions][:, None], sin[rows, positions][:, None])
            k = hidden @ weight[k_off : k_off + d].T + bias[k_off : k_off + d]
            k = apply_rotary(k[:, :, None], cos, sin)[:, :, 0]  # [B, S, d]
            # row by row: [N, S] without an [N, S, d] gather
            logits = torch.cat([q[rows == r, 0, 0] @ k[r].T for r in range(k.shape[0])]) * attn.scale
            seq = torch.arange(k.shape[1], device=k.device)
            out.append(logits.masked_fill(seq[None] > positions[:, None], float("-inf")).log_softmax(-1))
        return out

    def loss(self, query: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Mean ``-log`` attention mass on the target keys (``-1``: none), over queries and supervised layers;
        ``uniform``: the mean cross-entropy against an even spread over the keys."""
        if query.numel() == 0:
            return self.inputs[0][0].sum() * 0.0, {}
        total, mass = 0.0, []
        # the mass on the keys counts a repeated key once (repeats are adjacent: keys are sorted)
        repeated = torch.zeros_like(keys, dtype=torch.bool)
        repeated[:, 1:] = keys[:, 1:] == keys[:, :-1]
        distinct = keys.masked_fill(repeated, -1)
        for log_p in self.log_attention(query):
            on_target = log_target_mass(log_p, distinct)
            if self.uniform:
                valid = keys >= 0
                per_key = log_p.gather(1, keys.clamp(min=0)).masked_fill(~valid, 0.0)
                total = total - (per_key.sum(1) / valid.sum(1)).mean()
            else:
                total = total - on_target.mean()
            mass.append(on_target.detach().exp().mean())
        return total / len(self.blocks), {"attn_mass": sum(mass) / len(mass)}
