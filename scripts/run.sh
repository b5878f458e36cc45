#!/usr/bin/env bash
# The README's main command: setup, build, then the default comparative experiment on the CPU —
# the char-level KJV LM trained with softmax, sigmoid and softmax_1 attention, then the table.
# `scripts/run.sh vit` runs the same comparison for the small ViT on Fashion-MNIST instead, and
# `scripts/run.sh asr` for the small CTC speech recogniser (on a corpus it synthesises first).
# Extra environment (STEPS, SEEDS, CONFIG, ...) is passed to the experiment's run.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "building (first time: a few minutes)..."
bash scripts/build.sh >/dev/null
case "${1:-lm}" in
  lm) exec experiments/lm-kjv-variants/run.sh ;;
  vit) exec experiments/vit-fmnist-variants/run.sh ;;
  asr) exec experiments/asr-variants/run.sh ;;
  *) echo "usage: scripts/run.sh [lm|vit|asr]" >&2; exit 2 ;;
esac
