#!/usr/bin/env bash
# Run demo-model configs on one lent GPU (device tool); logs and float16 weights land in $OUT.
#   bash recipes/demo/gpu_sweep.sh MINUTES CONFIG...
# Arguments run side by side; "a,b,c" runs a, then b, then c (a lineage: each config's init names the
# previous run's recipes/demo/runs/NAME/final). MINUTES caps each run (--max-minutes). EVAL_PER_TASK=N
# shortens the quick held-out evaluations inside the runs (the final weights are scored afterwards anyway).
# .whl/ (carried) holds what the GPU image lacks or has too old: transformers>=5.24 and pydantic with
# pydantic_core, annotated_types and typing_inspection (the quick evaluations import qvl_agent.messages).
# A run whose recipes/demo/runs/NAME/checkpoint/state.pt is already there (copied in from a carried state
# made by carry_state.py, or left by an earlier call on the still-warm machine) resumes from it.
set -u
minutes=$1; shift
# once per machine: several sweeps may run side by side on a warm machine, and they share /tmp/site
[ -d /tmp/site/transformers ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
workers=${WORKERS:-$((14 / $#))}

run_config() {  # NAME: train it, print the end of its output, bring its log and float16 export back
  local name=$1 cfg=recipes/demo/configs/$1.json
  if [ -n "${EVAL_PER_TASK:-}" ]; then
    mkdir -p /tmp/configs
    python3 -c "import json,sys; c=json.load(open(sys.argv[1])); c['joint']['eval_per_task']=int(sys.argv[2]); json.dump(c,open(sys.argv[3],'w'))" \
      "$cfg" "$EVAL_PER_TASK" /tmp/configs/$name.json
    cfg=/tmp/configs/$name.json
  fi
  local resume=
  [ -f recipes/demo/runs/$name/checkpoint/state.pt ] && resume=--resume
  python3 recipes/demo/train.py "$cfg" --out recipes/demo/runs/$name --device cuda $resume \
    --workers "$workers" --max-minutes "$minutes" > /tmp/$name.out 2>&1
  tail -4 /tmp/$name.out
  cp recipes/demo/runs/$name/log.jsonl $OUT/$name.log.jsonl 2>/dev/null
  if [ -d recipes/demo/runs/$name/final ]; then
    python3 recipes/demo/export.py recipes/demo/runs/$name/final --out /tmp/export/$name >/dev/null \
      && tar -C /tmp/export -cf $OUT/$name.tar $name
  else
    return 1
  fi
}

for chain in "$@"; do
  ( IFS=,; for name in $chain; do run_config "$name" || break; done ) &
done
wait
ls -la $OUT
