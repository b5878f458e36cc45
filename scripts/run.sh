#!/usr/bin/env bash
# The README's main command: setup, build, then the default comparative experiment on the CPU —
# the char-level KJV LM trained with softmax, sigmoid and softmax_1 attention, then the table.
# Extra environment (STEPS, SEEDS, ...) is passed to experiments/lm-kjv-variants/run.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "building (first time: a few minutes)..."
bash scripts/build.sh >/dev/null
exec experiments/lm-kjv-variants/run.sh
