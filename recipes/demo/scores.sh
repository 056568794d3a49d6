#!/usr/bin/env bash
# The three evaluations a candidate is compared on (from the repository root), about 5 minutes on 2 CPU cores:
#   bash recipes/demo/scores.sh MODEL NAME
# MODEL is a checkpoint folder (or "demo" for the shipped one). Writes recipes/demo/results/NAME_n600.json
# (seed 0: the first 200 are the standard split), NAME_seed1_n600.json and NAME_tools300.json (300 tool
# episodes of seed 1); then `split_scores.py` prints the fresh scores and `compare.py A B` pairs two models.
set -euo pipefail
cd "$(dirname "$0")/../.."
model=$1; name=$2; out=recipes/demo/results
mkdir -p "$out"
run() { OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} qvl-agent eval --model "$model" --quiet "$@"; }
run --task all --n-samples 600 --output "$out/${name}_n600.json"
run --task all --n-samples 600 --seed 1 --output "$out/${name}_seed1_n600.json"
run --task tools --n-samples 300 --seed 1 --synthetic '{"task_weights": {"tools": 1.0}}' \
  --output "$out/${name}_tools300.json"
python recipes/demo/split_scores.py "$out/${name}_n600.json" --seed1 "$out/${name}_seed1_n600.json"
