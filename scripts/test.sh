#!/usr/bin/env bash
# The README's test command: setup, build, then every test (unit, parity vs PyTorch, gpu — the
# gpu ones skip with a message when no CUDA device is visible).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh "$@"
cd "${ATTNLAB_BUILD_DIR:-build}"
# setup.sh always installs python3-torch, so a torch that does not import here is a broken setup:
# the parity suites fail on it instead of skipping (which ctest would count as a pass).
export ATTNLAB_REQUIRE_TORCH=${ATTNLAB_REQUIRE_TORCH:-1}
ctest --output-on-failure -j "$(nproc)"
