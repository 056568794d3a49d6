#!/usr/bin/env bash
# Run several demo-model configs side by side on one lent GPU (device tool); results land in $OUT.
#   bash recipes/demo/gpu_sweep.sh MINUTES CONFIG...
set -u
minutes=$1; shift
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
for name in "$@"; do
  python3 recipes/demo/train.py recipes/demo/configs/$name.json --out /tmp/runs/$name --device cuda \
    --workers ${WORKERS:-4} --max-minutes "$minutes" > /tmp/$name.out 2>&1 &
done
wait
for name in "$@"; do
  tail -3 /tmp/$name.out
  cp /tmp/runs/$name/log.jsonl $OUT/$name.log.jsonl 2>/dev/null
  if [ -d /tmp/runs/$name/final ]; then
    python3 recipes/demo/export.py /tmp/runs/$name/final --out /tmp/export/$name >/dev/null \
      && tar -C /tmp/export -cf $OUT/$name.tar $name
  fi
done
ls -la $OUT
