"""The PNG report of ``qvl-agent eval``: scores, the learning curve of a training log, sample boxes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PIL import ImageDraw

#: held-out answer scores a training log may carry (``q_<task>``: greedy answers scored as ``qvl-agent eval`` does)
SCORE_KEYS = ("q_grounding", "q_vqa", "q_multi-image", "q_tools")


def _learning_curve(
    log_path: str | Path,
) -> tuple[list[tuple[int, float]], list[tuple[int, float]], dict[str, list[tuple[int, float]]]]:
    """``(train loss, held-out loss, {score key: points})`` of a ``log.jsonl``, each as ``(step, value)``."""
    train, held, scores = [], [], {}
    for line in Path(log_path).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        if "step" not in record:
            continue
        if "loss" in record:
            train.append((record["step"], record["loss"]))
        if "eval_loss" in record:
            held.append((record["step"], record["eval_loss"]))
        for key in SCORE_KEYS:
            if key in record:
                scores.setdefault(key, []).append((record["step"], record[key]))
    return train, held, scores


def draw_boxes(example: dict[str, Any]):
    """The example's picture with the reference box (green) and the predicted one (red)."""
    image = example["image"].copy()
    w, h = image.size
    draw = ImageDraw.Draw(image)

    def px(box):
        return [box[0] * w / 1000, box[1] * h / 1000, box[2] * w / 1000, box[3] * h / 1000]

    draw.rectangle(px(example["true"]), outline=(0, 200, 0), width=max(1, w // 128))
    if example["pred"] is not None:
        draw.rectangle(px(example["pred"]), outline=(230, 0, 0), width=max(1, w // 128))
    return image


def save_report(
    path: str | Path,
    summary: dict[str, dict[str, float]],
    title: str = "",
    train_log: str | Path | None = None,
    examples: list[dict[str, Any]] | None = None,
) -> Path:
    """Write the report PNG: a bar per score, the learning curve (if ``train_log``), grounding examples."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    examples = examples or []
    n_top = 2 if train_log else 1
    n_cols = max(n_top, len(examples), 1)
    fig = plt.figure(figsize=(4 * n_cols, 8 if examples else 4))
    grid = fig.add_gridspec(2 if examples else 1, n_cols)

    ax = fig.add_subplot(grid[0, : n_cols if not train_log else max(1, n_cols // 2)])
    labels, values = [], []
    for task, entry in summary.items():
        labels.append(f"{task}\n(n={int(entry['n'])})")
        values.append(entry["accuracy"])
        if task == "tools":
            for key in ("valid_format", "right_tool", "right_arguments", "final_answer"):
                labels.append(f"tools\n{key.replace('_', ' ')}")
                values.append(entry[key])
    positions = list(range(len(values)))[::-1]
    bars = ax.barh(positions, values, color="#4878cf")
    ax.set_yticks(positions, [label.replace("\n", " ") for label in labels], fontsize=8)
    ax.set_xlim(0, 1.15)
    ax.set_xlabel("score")
    ax.set_title(f"scores {title}".strip())
    for bar, value in zip(bars, values, strict=True):
        ax.text(value + 0.01, bar.get_y() + bar.get_height() / 2, f"{value:.2f}", va="center", fontsize=8)

    if train_log:
        ax = fig.add_subplot(grid[0, max(1, n_cols // 2) :])
        train, held, scores = _learning_curve(train_log)
        if train:
            ax.plot(*zip(*train, strict=True), label="train loss")
        if held:
            ax.plot(*zip(*held, strict=True), marker="o", label="held-out loss")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_yscale("log")
        ax.set_title("learning curve")
        ax.legend(loc="upper left", fontsize=8)
        if scores:  # held-out answer accuracy on a second axis
            twin = ax.twinx()
            for key, points in scores.items():
                twin.plot(
                    *zip(*points, strict=True), marker=".", linestyle="--", label=key.removeprefix("q_")
                )
            twin.set_ylim(0, 1)
            twin.set_ylabel("held-out score")
            twin.legend(loc="upper right", fontsize=8)

    for i, example in enumerate(examples):
        ax = fig.add_subplot(grid[1, i])
        ax.imshow(draw_boxes(example))
        ax.set_title(
            f"{example['label']}\nIoU {example['iou']:.2f} (green: true, red: predicted)", fontsize=8
        )
        ax.axis("off")

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
