#!/usr/bin/env bash
# Ship a checkpoint as the demo model and score it on the held-out split (from the repository root):
#   bash recipes/demo/promote.sh recipes/demo/runs/s1_vision/checkpoint-N NAME [N_SAMPLES] [TRAIN_LOG]
# Writes qvl_agent/assets/demo/ (with a stub TRAINING.json: complete it with the lineage -- configs, commands,
# seconds per run, logs -- as in the shipped one) and recipes/demo/results/NAME.{json,png}; add the scores to README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
ckpt=$1; name=$2; n=${3:-200}
log=${4:-$(dirname "$ckpt")/log.jsonl}
python recipes/demo/export.py "$ckpt" --note "{\"checkpoint\": \"$ckpt\", \"name\": \"$name\", \"results\": \"recipes/demo/results/$name.json\"}"
mkdir -p recipes/demo/results
OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} qvl-agent eval --model demo --task all --n-samples "$n" --quiet \
  --output "recipes/demo/results/$name.json" --train-log "$log"
