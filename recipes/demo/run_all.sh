#!/usr/bin/env bash
# The whole demo-model recipe, resumable: each stage continues from its newest checkpoint and is skipped once
# its final/ folder exists. Run from the repository root:
#   nohup bash recipes/demo/run_all.sh > recipes/demo/runs/run_all.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/../.."
STAGES=${STAGES:-"s1_vision s2_multitask s3_tools"}
for stage in $STAGES; do
  if [ -f "recipes/demo/runs/$stage/final/model.safetensors" ]; then
    echo "== $stage: done (recipes/demo/runs/$stage/final)"
    continue
  fi
  echo "== $stage: training ($(date -u +%FT%TZ))"
  python recipes/demo/train_demo.py "$stage"
done
