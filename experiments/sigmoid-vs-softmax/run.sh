#!/usr/bin/env bash
# The sigmoid-vs-softmax study (README.md): softmax, sigmoid and softmax_1 attention on the three
# model families, three seeds each, one grid per task; each sweep trains what is missing
# (finished runs kept, interrupted ones resumed) and writes its report.
#
#   experiments/sigmoid-vs-softmax/run.sh            # lm, vit and asr, one after another
#   experiments/sigmoid-vs-softmax/run.sh lm         # one task (the README's main job)
#   RUNS_ROOT=/scratch/svs experiments/sigmoid-vs-softmax/run.sh   # the run directories elsewhere
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${ATTNLAB_BIN:-build/src/attnlab}
RUNS_ROOT=${RUNS_ROOT:-runs/sigmoid-vs-softmax}
tasks=("$@")
[ ${#tasks[@]} -gt 0 ] || tasks=(lm vit asr)
for task in "${tasks[@]}"; do
  grid=experiments/sigmoid-vs-softmax/$task.yaml
  [ -f "$grid" ] || { echo "run.sh: no grid $grid (tasks: lm vit asr)" >&2; exit 2; }
  if [ "$task" = asr ] && [ ! -f data/asr-small/test.jsonl ]; then
    echo "== synthesising the small speech corpus into data/asr-small (once)"
    "$BIN" data asr --out data/asr-small --size small
  fi
  echo "== sigmoid-vs-softmax: $task ($grid)"
  "$BIN" sweep "$grid" --runs-dir "$RUNS_ROOT/$task"
done
echo
for task in "${tasks[@]}"; do echo "report ($task): $RUNS_ROOT/$task/report.md (plots in $RUNS_ROOT/$task/plots/)"; done
