#!/usr/bin/env bash
# The README's main command: setup, build, then the default comparative experiment on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh >/dev/null
exec "${ATTNLAB_BUILD_DIR:-build}/src/attnlab" train "$@"
