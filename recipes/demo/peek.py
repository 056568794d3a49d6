"""Quick look at a checkpoint's grounding: does the predicted box depend on the object named?

    python recipes/demo/peek.py recipes/demo/runs/s1_vision/checkpoint-300 --n 40

For the first ``--n`` held-out grounding questions (default synthetic split, seed 0) it prints acc@IoU0.5,
mean IoU, how often the predicted box centre lies inside the true box, and how often the predicted centre is
nearer the named object than any other object of the picture (chance ≈ 1 / number of objects).
``--objects K`` instead asks about new scenes with exactly K shapes and reports the box centre's x and y
errors apart (in [0,1000) units, next to those of always answering the centre).
"""

from __future__ import annotations

import argparse

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--show", type=int, default=5, help="print this many answers")
    parser.add_argument(
        "--objects", type=int, help="instead: fresh scenes with exactly this many shapes; x / y errors apart"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.objects:
        return fresh_scenes(args)

    from qvl_agent.backends import LocalQwenBackend
    from qvl_agent.data.synthetic import SyntheticDataset
    from qvl_agent.model import load_model
    from qvl_agent.training import evaluate
    from qvl_agent.training.metrics import extract_boxes, iou

    model, tokenizer = load_model(args.checkpoint)
    backend = LocalQwenBackend(model, tokenizer)
    samples = {s.id: s for s in SyntheticDataset(300, "heldout", 0)}
    items = [i for i in evaluate.synthetic_items(300, seed=0) if i.task == "grounding"][: args.n]
    hits = inside = nearest = 0
    total_iou, chance = 0.0, 0.0
    for k, item in enumerate(items):
        result = evaluate.run_item(backend, item, max_new_tokens=60)
        true = extract_boxes(item.expected)[0][1]
        pred = extract_boxes(result.prediction)
        scene = samples[item.id.split("#")[0]].scenes[0]
        chance += 1 / len(scene.objects)
        if k < args.show:
            print(f"{item.query.splitlines()[-1][:45]!r:50} -> {result.prediction[:60]!r}  (true {true})")
        if not pred:
            continue
        box = pred[0][1]
        value = iou(box, true)
        total_iou += value
        hits += value >= 0.5
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        inside += true[0] <= cx <= true[2] and true[1] <= cy <= true[3]
        dists = []
        for obj in scene.objects:
            x1, y1, x2, y2 = scene.norm_box(obj)
            dists.append(((x1 + x2) / 2 - cx) ** 2 + ((y1 + y2) / 2 - cy) ** 2)
        named = (
            [scene.norm_box(o) for o in scene.objects].index(true)
            if true in [scene.norm_box(o) for o in scene.objects]
            else -1
        )
        nearest += named >= 0 and min(range(len(dists)), key=dists.__getitem__) == named
    n = len(items)
    print(
        f"{args.checkpoint}: acc@0.5 {hits / n:.3f}  mean IoU {total_iou / n:.3f}  "
        f"centre inside {inside / n:.3f}  nearest-object {nearest / n:.3f} (chance {chance / n:.3f})"
    )


def fresh_scenes(args: argparse.Namespace) -> None:
    """Grounding on new scenes with ``args.objects`` shapes: is the x or the y of the box read from the picture?"""
    import random

    from qvl_agent.data.scenes import SceneConfig, random_scene, render_scene
    from qvl_agent.model import load_model
    from qvl_agent.training.metrics import extract_boxes, iou

    model, tokenizer = load_model(args.checkpoint)
    rng = random.Random(123)
    config = SceneConfig(min_objects=args.objects, max_objects=args.objects, tiny_prob=0.0, text_prob=0.0)
    hits, dx, dy, dx0, dy0, n = 0, 0.0, 0.0, 0.0, 0.0, 0
    for k in range(args.n):
        scene = random_scene(rng, config)
        unique = [o for o in scene.objects if sum(x.noun() == o.noun() for x in scene.objects) == 1]
        if not unique:
            continue
        obj = unique[0]
        query = f"Picture 1: <img>scene.png</img>\nFind the {obj.noun()}."
        answer, _ = model.chat(
            tokenizer, query, history=None, images=[render_scene(scene)], max_new_tokens=40
        )
        true = scene.norm_box(obj)
        boxes = extract_boxes(answer)
        n += 1
        if k < args.show:
            print(f"{answer!r} (true {true})")
        dx0 += abs(500 - (true[0] + true[2]) / 2)  # error of always answering the centre
        dy0 += abs(500 - (true[1] + true[3]) / 2)
        box = boxes[0][1] if boxes else (500, 500, 500, 500)  # no box: scored as the centre guess
        hits += iou(box, true) >= 0.5
        dx += abs((box[0] + box[2]) / 2 - (true[0] + true[2]) / 2)
        dy += abs((box[1] + box[3]) / 2 - (true[1] + true[3]) / 2)
    print(
        f"{args.checkpoint}: {args.objects} object(s), n={n}: acc@0.5 {hits / n:.3f}  "
        f"|x error| {dx / n:.0f}  |y error| {dy / n:.0f}  (always-centre: {dx0 / n:.0f} / {dy0 / n:.0f})"
    )


if __name__ == "__main__":
    main()
