"""Average the weights of checkpoints of one lineage (a "model soup"): no training, no compute budget.

    python recipes/demo/average.py resume/demo_countp_final runs/demo_countp4/final --out runs/demo_countp4_soup
    python recipes/demo/average.py A B --weights 0.25 0.75 --out OUT

Every folder must hold the same architecture (``config.json``) and a ``model.safetensors`` with the same
tensor names; float tensors are averaged in float32 and saved float32, the rest are taken from the first.
The output folder copies the first checkpoint's other files (config, tokenizer), so it loads like any
``final/`` folder and ``export.py`` and ``qvl-agent eval --model`` take it.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def average_state_dicts(
    states: list[dict[str, torch.Tensor]], weights: list[float]
) -> dict[str, torch.Tensor]:
    """The weighted mean of float tensors (float32); other tensors from the first state dict."""
    if len(states) != len(weights) or not states:
        raise ValueError("one weight per state dict, at least one")
    names = set(states[0])
    for state in states[1:]:
        if set(state) != names:
            raise ValueError(f"tensor names differ: {sorted(names ^ set(state))[:5]}")
    total = sum(weights)
    out = {}
    for name, first in states[0].items():
        if first.is_floating_point():
            out[name] = sum(w / total * s[name].float() for s, w in zip(states, weights, strict=True))
        else:
            out[name] = first
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--weights", nargs="*", type=float, help="one per checkpoint (default: equal)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    weights = args.weights or [1.0] * len(args.checkpoints)
    if len(weights) != len(args.checkpoints):
        parser.error("--weights takes one number per checkpoint")
    configs = [json.loads((c / "config.json").read_text()) for c in args.checkpoints]
    keep = ("architectures", "visual", "hidden_size", "num_hidden_layers", "vocab_size")
    if any({k: c.get(k) for k in keep} != {k: configs[0].get(k) for k in keep} for c in configs):
        parser.error("the checkpoints have different architectures")
    states = [load_file(c / "model.safetensors") for c in args.checkpoints]
    try:
        averaged = average_state_dicts(states, weights)
    except ValueError as err:
        parser.error(str(err))
    shutil.copytree(args.checkpoints[0], args.out, dirs_exist_ok=True)
    config = configs[0] | {"dtype": "float32"}
    (args.out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_file(averaged, args.out / "model.safetensors", metadata={"format": "pt"})
    print(f"wrote {args.out}: mean of {len(states)} checkpoints, weights {weights}")


if __name__ == "__main__":
    main()
