#!/usr/bin/env bash
# The GPU job (run it on a machine with a CUDA build of torch; CI has no GPU): every test that takes the
# `device` fixture, on CUDA -- parity with the Qwen-VL reference vectors in fp32 (1e-4, TF32 off), chat, the
# demo model's held-out floors, a short training run -- then the demo model's full held-out eval on the GPU.
# It installs nothing: torch must already be a CUDA build (scripts/test.sh pins the CPU wheel).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-gpu-report}"
mkdir -p "$out"

python3 -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA GPU'; print(torch.cuda.get_device_name())"
python3 -m pytest -q -p no:cacheprovider -m gpu -rA --junitxml="$out/junit.xml" \
  tests/model/test_modeling_parity.py tests/model/test_chat.py tests/test_demo_model.py tests/training/test_trainer.py
python3 -m qvl_agent.cli eval --model demo --device cuda --task all --n-samples 200 --quiet --output "$out/eval_demo_cuda.json"
