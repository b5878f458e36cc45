#!/usr/bin/env bash
# The README's test command: setup, build, then every test (unit, parity vs PyTorch, gpu — the
# gpu ones skip with a message when no CUDA device is visible).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh "$@"
cd "${ATTNLAB_BUILD_DIR:-build}"
ctest --output-on-failure -j "$(nproc)"
