"""Dense per-cell targets for the vision side: what the language model will have to read from each image token.

The resampler's ``n_queries`` outputs sit on a ``g x g`` grid over the picture (``g = sqrt(n_queries)``). The
token of the cell holding an object's centre is made to carry that object: is there one, its colour, shape,
size word, written word, and its box in Qwen-VL's [0,1000) coordinates, both as numbers and as the hundreds and
tens digits the language model writes. A linear head (:class:`DenseHead`, discarded after training) reads
them, so the features the language model sees start out linearly decodable -- the language model then only
has to find the right token (by colour and shape) and copy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from qvl_agent.data.scenes import COLOURS, SHAPES, SIZES, WORDS, Scene, SceneObject

COLOUR_IDS = {c: i for i, c in enumerate(COLOURS)}
SHAPE_IDS = {s: i for i, s in enumerate((*SHAPES, "text"))}
SIZE_IDS = {s: i for i, s in enumerate(SIZES)}
WORD_IDS = {w: i + 1 for i, w in enumerate(WORDS)}  # 0: not a word
#: (name, classes) of the categorical targets, in the head's output order after the objectness logit
CLASSES = (
    ("colour", len(COLOUR_IDS)),
    ("shape", len(SHAPE_IDS)),
    ("size", len(SIZE_IDS)),
    ("word", len(WORDS) + 1),
    *((f"digit{i}", 10) for i in range(8)),  # hundreds and tens of x1, y1, x2, y2
)
IGNORE = -100


def cell_of(scene: Scene, obj: SceneObject, grid: int) -> int:
    """Index of the ``grid x grid`` cell (row-major) holding the centre of ``obj``."""
    cx, cy = obj.center
    col = min(int(cx / scene.width * grid), grid - 1)
    row = min(int(cy / scene.height * grid), grid - 1)
    return row * grid + col


def cells_around(scene: Scene, obj: SceneObject, grid: int, spread: int = 1) -> list[int]:
    """The cells (row-major) whose centres lie nearest the centre of ``obj``: ``spread`` 1 is
    :func:`cell_of`; ``spread`` 2 is the 2x2 block around the centre point (the four cells a bilinear
    read-out of that point would use), so a finer grid keeps about the same area per target."""
    if spread == 1:
        return [cell_of(scene, obj, grid)]
    if spread != 2:
        raise ValueError(f"spread must be 1 or 2, not {spread}")
    cx, cy = obj.center
    # the cell centres sit at (i + 0.5) / grid; the block starts at the one left of / above the point
    col = min(max(int(cx / scene.width * grid - 0.5), 0), grid - 2)
    row = min(max(int(cy / scene.height * grid - 0.5), 0), grid - 2)
    return [(row + dr) * grid + col + dc for dr in (0, 1) for dc in (0, 1)]


def scene_targets(scene: Scene | None, grid: int) -> dict[str, torch.Tensor]:
    """Targets of one picture on a ``grid x grid`` cell map (all ignored for a picture without a scene)."""
    cells = grid * grid
    out = {"objectness": torch.zeros(cells), "box": torch.zeros(cells, 4)}
    out.update({name: torch.full((cells,), IGNORE, dtype=torch.long) for name, _ in CLASSES})
    out["has_scene"] = torch.tensor(scene is not None)
    if scene is None:
        return out
    for obj in scene.objects:
        k = cell_of(scene, obj, grid)
        box = scene.norm_box(obj)
        out["objectness"][k] = 1.0
        out["box"][k] = torch.tensor(box, dtype=torch.float32) / 1000.0
        out["colour"][k] = COLOUR_IDS[obj.colour]
        out["shape"][k] = SHAPE_IDS[obj.shape]
        out["size"][k] = SIZE_IDS[obj.size]
        out["word"][k] = WORD_IDS.get(obj.text or "", 0)
        for i, value in enumerate(box):
            out[f"digit{2 * i}"][k] = value // 100
            out[f"digit{2 * i + 1}"][k] = (value // 10) % 10
    return out


def stack_targets(targets: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {key: torch.stack([t[key] for t in targets]) for key in targets[0]}


class DenseHead(nn.Module):
    """One linear layer from image tokens to every target (objectness, classes, box)."""

    def __init__(
        self,
        dim: int,
        word_embedding: nn.Embedding | None = None,
        word_ids: dict[str, list[list[int | None]]] | None = None,
    ) -> None:
        """``word_embedding`` + ``word_ids`` (``{"colour": [table], "shape": [table, table], ...}``; a table
        gives each class's token id in class order, ``None`` for a class without one): also score those
        classes against the language model's own embeddings of their words, so an image token holding a
        yellow square points the way the text tokens " yellow" and " square" (and, with a second table,
        " squares") do."""
        super().__init__()
        self.sizes = [1] + [n for _, n in CLASSES] + [4]
        self.linear = nn.Linear(dim, sum(self.sizes))
        self.word_embedding = [word_embedding]  # a list: not a submodule (it belongs to the language model)
        self.word_ids = word_ids or {}

    def forward(
        self, tokens: torch.Tensor, targets: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(loss, metrics)`` over the pictures that have a scene."""
        keep = targets["has_scene"]
        if not bool(keep.any()):
            return tokens.sum() * 0.0, {}
        parts = self.linear(tokens[keep].float()).split(self.sizes, dim=-1)
        obj_logit, class_logits, box = parts[0].squeeze(-1), parts[1:-1], parts[-1]
        loss = F.binary_cross_entropy_with_logits(obj_logit, targets["objectness"][keep])
        # metrics stay tensors (no device sync each step); the training loop averages them when it logs
        metrics = {
            "objectness": ((obj_logit > 0) == (targets["objectness"][keep] > 0.5)).float().mean().detach()
        }
        for (name, _), logits in zip(CLASSES, class_logits, strict=True):
            labels = targets[name][keep]
            mask = labels != IGNORE
            if mask.any():
                loss = loss + F.cross_entropy(logits[mask], labels[mask]) / 4
                metrics[name] = (logits[mask].argmax(-1) == labels[mask]).float().mean().detach()
                if self.word_embedding[0] is not None:
                    for t, ids in enumerate(self.word_ids.get(name, [])):
                        tied = self._tied(tokens[keep], labels, mask, ids)
                        if tied is not None:
                            loss = loss + tied[0]
                            metrics[f"{name}_tied" + (f"{t + 1}" if t else "")] = tied[1]
        mask = targets["objectness"][keep] > 0.5
        if mask.any():
            error = (box[mask] - targets["box"][keep][mask]).abs()
            loss = loss + 10 * error.mean()
            metrics["box_err"] = error.detach().mean() * 1000  # mean |error| in [0,1000) units
        return loss, metrics

    def _tied(
        self, tokens: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, ids: list[int | None]
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(loss, accuracy)`` of the tokens read against the embeddings of ``ids`` (the classes without a
        token left out); ``None`` when no row's class has a token."""
        has_token = torch.tensor([i is not None for i in ids], device=labels.device)
        rows = mask & has_token[labels.clamp(min=0)]
        if not rows.any():
            return None
        position = has_token.long().cumsum(0) - 1  # class -> index among the classes with a token
        table = self.word_embedding[0].weight[[i for i in ids if i is not None]]
        tied = tokens[rows].float() @ table.float().T
        target = position[labels[rows]]
        return F.cross_entropy(tied, target) / 4, (tied.argmax(-1) == target).float().mean().detach()
