#!/usr/bin/env bash
# Configures and builds attnlab into build/ (CUDA on when nvcc is found; see CMakeLists.txt).
# Extra arguments go to cmake, e.g. scripts/build.sh -DATTNLAB_CUDA=OFF
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
BUILD_DIR=${ATTNLAB_BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build "$BUILD_DIR" -j "$(nproc)"
