#!/usr/bin/env bash
# The test command: installs/builds (scripts/setup.sh), fetches the default model and Gemma 3
# 270M (cached), and runs the whole CTest suite. Exits non-zero when any test fails.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
AQUAKV_MODEL=$(scripts/fetch_model.sh)
AQUAKV_GEMMA_MODEL=$(scripts/fetch_model.sh gemma3-270m)
export AQUAKV_MODEL AQUAKV_GEMMA_MODEL
cd build
ctest --output-on-failure -j"$(nproc)" "$@"
