#!/usr/bin/env bash
# The README's main command: setup, build, then the default comparative experiment on the CPU —
# the sigmoid-vs-softmax study's LM part (experiments/sigmoid-vs-softmax/): the char-level KJV LM
# trained with softmax, sigmoid and softmax_1 attention, three seeds each, as one sweep; then it
# prints where the report (tables with mean ± std and paired differences, plots) is.
# `scripts/run.sh vit` / `scripts/run.sh asr` run the same study's ViT (Fashion-MNIST) or speech
# part; `scripts/run.sh all` all three. The older one-seed table scripts remain:
# experiments/{lm-kjv-variants,vit-fmnist-variants,asr-variants}/run.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "building (first time: a few minutes)..."
bash scripts/build.sh >/dev/null
case "${1:-lm}" in
  lm | vit | asr) exec experiments/sigmoid-vs-softmax/run.sh "${1:-lm}" ;;
  all) exec experiments/sigmoid-vs-softmax/run.sh lm vit asr ;;
  *) echo "usage: scripts/run.sh [lm|vit|asr|all]" >&2; exit 2 ;;
esac
