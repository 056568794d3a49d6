"""Shrink a resume state (OUT/checkpoint/state.pt) so it fits the GPU machine's 64 MiB working tree.

The weights stay float32; the optimizer's moment tensors are stored as bfloat16 (torch's
``Optimizer.load_state_dict`` casts them back to the parameters' dtype), which halves the file.
A run resumed from it is a preview, not a bit-exact continuation.

    python recipes/demo/carry_state.py recipes/demo/resume/demo_grid12s.pt .gpu/demo_grid12s.pt
"""

import argparse
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("state", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    saved = torch.load(args.state, weights_only=False, map_location="cpu")
    for per_param in saved["optimizer"]["state"].values():
        for key, value in per_param.items():
            if torch.is_tensor(value) and value.is_floating_point() and value.dim() > 0:
                per_param[key] = value.to(torch.bfloat16)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(saved, args.out)
    print(
        f"{args.out}: {args.out.stat().st_size / 2**20:.1f} MiB (from {args.state.stat().st_size / 2**20:.1f})"
    )


if __name__ == "__main__":
    main()
