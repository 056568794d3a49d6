#!/usr/bin/env bash
# Train a lineage on this CPU across sessions, keeping every finished or stopped run in git.
#   bash recipes/demo/lineage.sh MINUTES NAME...      e.g.  lineage.sh 150 demo_countl demo_countl2 demo_countl3
# Runs recipes/demo/configs/NAME.json in order, each continuing the one before (a config's "init" names
# recipes/demo/runs/PREVIOUS/final), and stops starting or running anything MINUTES after it began. runs/ is
# git-ignored, so what a later session needs is committed as it is made (COMMIT=0: copy it, commit nothing):
#   - a stopped run: its resume state as resume/NAME.pt and its log as results/NAME.log.jsonl;
#   - a finished run: its float32 final as resume/NAME_final (the next config's init) and its log; the
#     resume state, now useless, leaves the tree.
# In a new checkout each NAME is taken up where the tree left it: runs/NAME/final or resume/NAME_final means
# done (the latter is copied to runs/NAME/final), resume/NAME.pt means resume (state and log are copied in).
# TRAIN_ARGS: more train.py flags for every run, e.g. TRAIN_ARGS="--threads 4" or "--max-steps 1000".
set -u
cd "$(dirname "$0")/../.."
minutes=$1; shift
deadline=$(awk -v m="$minutes" -v now="$(date +%s.%N)" 'BEGIN { printf "%.3f", now + 60 * m }')
demo=recipes/demo

keep() {  # MESSAGE PATH...: commit just these paths (added or removed); the rest of the index is left alone
  local message=$1 path paths=(); shift
  [ "${COMMIT:-1}" = 0 ] && return 0
  for path in "$@"; do  # a path neither here nor tracked (a resume state never committed) is no change
    [ -e "$path" ] || git ls-files --error-unmatch -- "$path" > /dev/null 2>&1 && paths+=("$path")
  done
  git add -A -- "${paths[@]}" && git commit -q -m "$message" -- "${paths[@]}" && git log --oneline -1
}

for name in "$@"; do
  run=$demo/runs/$name
  if [ -d "$run/final" ]; then echo "$name: done"; continue; fi
  if [ -d "$demo/resume/${name}_final" ]; then
    mkdir -p "$run" && cp -r "$demo/resume/${name}_final" "$run/final" && echo "$name: done (from resume/)"
    continue
  fi
  resume=
  if [ -f "$run/checkpoint/state.pt" ]; then
    resume=--resume
  elif [ -f "$demo/resume/$name.pt" ]; then
    mkdir -p "$run/checkpoint"
    cp "$demo/resume/$name.pt" "$run/checkpoint/state.pt"
    [ -f "$demo/results/$name.log.jsonl" ] && cp "$demo/results/$name.log.jsonl" "$run/log.jsonl"
    resume=--resume
  fi
  left=$(awk -v d="$deadline" -v now="$(date +%s.%N)" 'BEGIN { printf "%.4f", (d - now) / 60 }')
  if awk -v l="$left" 'BEGIN { exit !(l <= 0) }'; then echo "$name: not started (out of time)"; break; fi
  echo "$name: training ${resume:-from the start} for at most $left minutes ($(date +%H:%M))"
  mkdir -p "$run"
  python "$demo/train.py" "$demo/configs/$name.json" --out "$run" $resume --max-minutes "$left" ${TRAIN_ARGS:-} \
    >> "$run.out" 2>&1 \
    || { echo "$name: train.py failed, see $run.out"; tail -3 "$run.out"; exit 1; }
  cp "$run/log.jsonl" "$demo/results/$name.log.jsonl"
  if [ -d "$run/final" ]; then
    rm -rf "$demo/resume/${name}_final" && cp -r "$run/final" "$demo/resume/${name}_final"
    rm -f "$demo/resume/$name.pt"
    keep "resume/${name}_final: $name finished (lineage.sh)" \
      "$demo/resume/${name}_final" "$demo/resume/$name.pt" "$demo/results/$name.log.jsonl"
  else
    cp "$run/checkpoint/state.pt" "$demo/resume/$name.pt"
    keep "resume/$name.pt: $name stopped by the time limit; continue with lineage.sh (lineage.sh)" \
      "$demo/resume/$name.pt" "$demo/results/$name.log.jsonl"
    echo "$name: stopped, resume state kept"
    break
  fi
done
