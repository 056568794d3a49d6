"""The demo recipe's dense head (``recipes/demo/dense_targets.py``): word tying against token tables."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "demo"
sys.path.insert(0, str(RECIPE))

from dense_targets import SHAPE_IDS, DenseHead, scene_targets, stack_targets  # noqa: E402

from qvl_agent.data.scenes import Scene, SceneObject  # noqa: E402

GRID, DIM = 4, 8


def scene() -> Scene:
    objects = [
        SceneObject("square", "red", "large", (0, 0, 30, 30)),
        SceneObject("star", "blue", "small", (70, 70, 90, 90)),
        SceneObject("text", "green", "small", (10, 70, 40, 80), text="cat", font_size=10),
    ]
    return Scene(128, 128, "white", objects)


def test_each_table_scores_the_classes_that_have_a_token_and_skips_the_others() -> None:
    torch.manual_seed(0)
    embedding = nn.Embedding(20, DIM)
    singular = [10 + i for i in range(len(SHAPE_IDS))]  # every shape class, "text" included
    plural = [None if s in ("text", "circle") else 3 + i for i, s in enumerate(SHAPE_IDS)]
    head = DenseHead(DIM, embedding, {"shape": [singular, plural]})
    tokens = torch.randn(1, GRID * GRID, DIM)
    targets = stack_targets([scene_targets(scene(), GRID)])

    _, metrics = head(tokens, targets)

    cells = targets["shape"][0] >= 0
    labels = targets["shape"][0][cells]
    feats = tokens[0][cells]
    # table 1: all three objects (square, star, text) against the six singular tokens
    logits1 = feats @ embedding.weight[singular].T
    expected1 = (logits1.argmax(-1) == labels).float().mean()
    assert torch.isclose(metrics["shape_tied"], expected1)
    # table 2: the text object has no plural token, so only the square and the star count, and the classes
    # are renumbered among the four shapes that have one
    keep = torch.tensor([plural[int(c)] is not None for c in labels])
    with_token = [i for i in plural if i is not None]
    logits2 = feats[keep] @ embedding.weight[with_token].T
    renumbered = torch.tensor([with_token.index(plural[int(c)]) for c in labels[keep]])
    assert keep.sum() == 2
    assert torch.isclose(metrics["shape_tied2"], (logits2.argmax(-1) == renumbered).float().mean())


def test_the_tied_loss_is_the_cross_entropy_against_each_table_and_pulls_its_tokens() -> None:
    torch.manual_seed(1)
    embedding = nn.Embedding(20, DIM)
    plural = [2 if s == "square" else 3 if s == "star" else None for s in SHAPE_IDS]
    ids = [[10 + i for i in range(len(SHAPE_IDS))], plural]
    tied_head = DenseHead(DIM, embedding, {"shape": ids})
    plain_head = DenseHead(DIM)
    plain_head.load_state_dict(tied_head.state_dict())
    tokens = torch.randn(1, GRID * GRID, DIM)
    targets = stack_targets([scene_targets(scene(), GRID)])

    tied_loss, _ = tied_head(tokens, targets)
    plain_loss, _ = plain_head(tokens, targets)
    cells = targets["shape"][0] >= 0
    feats, labels = tokens[0][cells], targets["shape"][0][cells]
    first = F.cross_entropy(feats @ embedding.weight[ids[0]].T, labels) / 4
    # the second table: only the square and the star have a token, renumbered 0 and 1
    has = torch.tensor([plural[int(c)] is not None for c in labels])
    target = torch.tensor([[2, 3].index(plural[int(c)]) for c in labels[has]])
    second = F.cross_entropy(feats[has] @ embedding.weight[[2, 3]].T, target) / 4
    assert has.sum() == 2
    assert torch.isclose(tied_loss - plain_loss, first + second, atol=1e-5)

    # the gradient reaches the language model's embeddings of the tied words
    tied_loss.backward()
    assert embedding.weight.grad[10 + SHAPE_IDS["square"]].abs().sum() > 0
    assert embedding.weight.grad[2].abs().sum() > 0  # " squares"
    assert embedding.weight.grad[4:10].abs().sum() == 0 and embedding.weight.grad[16:].abs().sum() == 0


def test_letters_ties_the_written_words_except_those_that_encode_as_coordinate_digits() -> None:
    from train import tied_word_ids

    from qvl_agent.data.scenes import WORDS
    from qvl_agent.model import QWenTokenizer

    tokenizer = QWenTokenizer.from_pretrained(
        Path(__file__).resolve().parents[2] / "qvl_agent" / "assets" / "demo"
    )
    every = tied_word_ids(tokenizer, ["colour", "word"])["word"][0]
    letters = tied_word_ids(tokenizer, ["colour", "letters"])
    assert set(letters) == {"colour", "word"}  # keyed by the dense head's class
    table = letters["word"][0]
    assert table[0] is None and len(table) == len(WORDS) + 1
    digits = {tokenizer.encode(d)[0] for d in "0123456789"}
    for word, tied, all_words in zip(WORDS, table[1:], every[1:], strict=True):
        if word[0].isdigit():
            assert tied is None and all_words in digits  # "42" -> "4", "7" -> "7": left out
        else:
            assert tied == all_words == tokenizer.encode(word)[0]
    assert tied_word_ids(tokenizer, True).keys() == {"colour", "shape"}
    assert len(tied_word_ids(tokenizer, ["shape", "plural"])["shape"]) == 2
    try:
        tied_word_ids(tokenizer, ["word", "letters"])
    except ValueError as exc:
        assert "choose one" in str(exc)
    else:
        raise AssertionError("word and letters together must be refused")
