#!/usr/bin/env bash
# The attention variants on the same CTC speech recogniser: same corpus, model, optimizer and
# seed; only attention.variant (and attention.position, with POSITIONS) changes. Synthesises the
# corpus first if it is missing (cached and resumable), then trains each variant and prints the
# comparison table (validation and test CER/WER, the length-generalisation set, frames/s).
#
#   experiments/asr-variants/run.sh                                     # small config (CPU, minutes)
#   CONFIG=configs/asr/reference.yaml experiments/asr-variants/run.sh   # the reference size
#   POSITIONS="sinusoidal rope alibi" VARIANTS="softmax sigmoid" ...    # the positions ablation
#   SEEDS="1 2 3" ...                                                   # mean ± std over seeds
#
# A finished run is not redone; an interrupted one is resumed from its last checkpoint.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${ATTNLAB_BIN:-build/src/attnlab}
source experiments/lib.sh
CONFIG=${CONFIG:-configs/asr/small.yaml}
SEEDS=${SEEDS:-1}
VARIANTS=${VARIANTS:-softmax sigmoid softmax1}
POSITIONS=${POSITIONS:-}
NAME=$(basename "$CONFIG" .yaml)
RUNS_DIR=${RUNS_DIR:-runs/asr-variants}
read -r -a extra <<< "${SET:-}"

# The corpus the config names (data.corpus_dir), and its size from the config's name.
corpus=$(sed -n 's/^  corpus_dir: *//p' "$CONFIG" | head -1)
size=small
case "$NAME" in reference*) size=reference ;; esac
if [ ! -f "$corpus/test.jsonl" ]; then
  echo "== synthesising the $size corpus into $corpus"
  "$BIN" data asr --out "$corpus" --size "$size"
fi

dirs=()
for seed in $SEEDS; do
  for variant in $VARIANTS; do
    for position in ${POSITIONS:-default}; do
      pos_args=()
      tag=$variant
      if [ "$position" != default ]; then
        pos_args=(--set model.position="$position")
        tag=$variant-$position
      fi
      dir="$RUNS_DIR/$NAME-$tag-s$seed"
      dirs+=("$dir")
      train_or_resume "$dir" "$tag (seed $seed, $CONFIG)" --config "$CONFIG" --set attention.variant="$variant" \
        "${pos_args[@]}" --set run.seed="$seed" --set run.dir="$dir" "${extra[@]}"
    done
  done
done
echo
echo "## Speech recognition with CTC ($CONFIG)"
echo
"$BIN" compare "${dirs[@]}" | tee "$RUNS_DIR/compare-$NAME.md"
