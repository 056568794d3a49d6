"""Copy a trained checkpoint into the package as the embedded demo model (``load_model("demo")``).

    python recipes/demo/export.py recipes/demo/runs/s1_vision/checkpoint-3000 [--dtype float16]

Writes ``qvl_agent/assets/demo/``: ``config.json`` (fp32 flag on, so the model runs in float32 on CPU),
``generation_config.json`` (greedy ChatML), ``model.safetensors`` (weights stored in ``--dtype`` to keep the
package small), ``qwen.tiktoken`` (the small vocabulary) and ``tokenizer_config.json`` (its ``image_span``
must equal the resampler's query count). Refuses to write more than 20 MB.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
ASSETS = ROOT / "qvl_agent" / "assets" / "demo"
MAX_BYTES = 20 * 1024 * 1024


def export(checkpoint: Path, out: Path = ASSETS, dtype: str = "float16", note: dict | None = None) -> Path:
    """Write the demo model files from ``checkpoint`` into ``out``; returns ``out``."""
    from safetensors.torch import load_file, save_file

    if not (checkpoint / "model.safetensors").is_file():
        raise SystemExit(f"{checkpoint} has no model.safetensors")
    state = load_file(str(checkpoint / "model.safetensors"))
    target = getattr(torch, dtype)
    state = {k: (v.to(target) if v.is_floating_point() else v).contiguous() for k, v in state.items()}

    config = json.loads((checkpoint / "config.json").read_text())
    config["fp32"], config["bf16"], config["fp16"] = True, False, False
    config.pop("dtype", None)
    config.pop("torch_dtype", None)
    generation = json.loads((checkpoint / "generation_config.json").read_text())
    # transformers rebuilds a generation config marked "_from_model_config" from the model config, which
    # drops chat_format / max_window_size (model.chat then fails): the shipped one is a real, standalone file.
    generation.pop("_from_model_config", None)

    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (tmp / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    shutil.copy(checkpoint / "qwen.tiktoken", tmp / "qwen.tiktoken")
    if (checkpoint / "tokenizer_config.json").is_file():
        shutil.copy(checkpoint / "tokenizer_config.json", tmp / "tokenizer_config.json")
    if note:
        (tmp / "TRAINING.json").write_text(json.dumps(note, indent=1) + "\n")
    size = sum(f.stat().st_size for f in tmp.iterdir())
    if size > MAX_BYTES:
        shutil.rmtree(tmp)
        raise SystemExit(f"demo model would be {size / 1e6:.1f} MB, over the 20 MB limit")
    out.mkdir(parents=True, exist_ok=True)
    for f in out.iterdir():
        if f.is_file():
            f.unlink()
    for f in tmp.iterdir():
        shutil.move(str(f), out / f.name)
    tmp.rmdir()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--out", type=Path, default=ASSETS)
    parser.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    parser.add_argument("--note", help="JSON with provenance/scores to store as TRAINING.json")
    args = parser.parse_args()
    note = json.loads(args.note) if args.note else None
    out = export(args.checkpoint, args.out, args.dtype, note)
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"wrote {out} ({size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
