#!/usr/bin/env bash
# The three attention variants on the same ViT on Fashion-MNIST: same data, model, optimizer and
# seed; only attention.variant changes. Then the comparison table (validation and test accuracy).
#
#   experiments/vit-fmnist-variants/run.sh                                 # small config (CPU, minutes)
#   CONFIG=configs/vit/fmnist.yaml experiments/vit-fmnist-variants/run.sh  # the reference size
#   SEEDS="1 2 3" ...                                                      # mean ± std over seeds
#
# A finished run is not redone; an interrupted one is resumed from its last checkpoint.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${ATTNLAB_BIN:-build/src/attnlab}
source experiments/lib.sh
CONFIG=${CONFIG:-configs/vit/fmnist-small.yaml}
SEEDS=${SEEDS:-1}
NAME=$(basename "$CONFIG" .yaml)
RUNS_DIR=${RUNS_DIR:-runs/vit-fmnist-variants}
read -r -a extra <<< "${SET:-}"
dirs=()
for seed in $SEEDS; do
  for variant in softmax sigmoid softmax1; do
    dir="$RUNS_DIR/$NAME-$variant-s$seed"
    dirs+=("$dir")
    train_or_resume "$dir" "$variant (seed $seed, $CONFIG)" --config "$CONFIG" --set attention.variant="$variant" \
      --set run.seed="$seed" --set run.dir="$dir" "${extra[@]}"
  done
done
echo
echo "## ViT on Fashion-MNIST ($CONFIG)"
echo
"$BIN" compare "${dirs[@]}" | tee "$RUNS_DIR/compare-$NAME.md"
