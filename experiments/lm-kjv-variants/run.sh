#!/usr/bin/env bash
# The three attention variants on the same char-level KJV LM: same data, model, optimizer and
# seed; only attention.variant changes. Then the comparison table.
#
#   experiments/lm-kjv-variants/run.sh                 # the README's main job (short runs)
#   STEPS=2000 WARMUP=100 experiments/lm-kjv-variants/run.sh   # the full reference schedule
#   SEEDS="1 2 3" ...                                  # mean ± std over seeds
#
# A finished run is not redone; an interrupted one is resumed from its last checkpoint.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${ATTNLAB_BIN:-build/src/attnlab}
source experiments/lib.sh
STEPS=${STEPS:-300}
WARMUP=${WARMUP:-30}
SEEDS=${SEEDS:-1}
RUNS_DIR=${RUNS_DIR:-runs/lm-kjv-variants}
# Extra overrides for every run, e.g. on a GPU:
#   SET="--set run.device=cuda --set run.precision=bf16 --set model.n_heads=2" RUNS_DIR=runs/gpu
read -r -a extra <<< "${SET:-}"
dirs=()
for seed in $SEEDS; do
  for variant in softmax sigmoid softmax1; do
    dir="$RUNS_DIR/$variant-steps$STEPS-s$seed"
    dirs+=("$dir")
    args=(--config configs/lm/kjv-char.yaml --set attention.variant="$variant" --set run.seed="$seed"
          --set train.steps="$STEPS" --set train.warmup_steps="$WARMUP" --set eval.every=100
          --set checkpoint.every=100 --set run.dir="$dir" "${extra[@]}")
    train_or_resume "$dir" "$variant (seed $seed, $STEPS steps)" "${args[@]}"
  done
done
echo
echo "## Char-level LM on the KJV Bible, $STEPS steps (validation loss in nats/char)"
echo
"$BIN" compare "${dirs[@]}" | tee "$RUNS_DIR/compare-steps$STEPS.md"
