#!/usr/bin/env bash
# Regenerates the grids compiled into aquakv: data/grids/CLVQ{d}-{n}.n{n}xd{d}.f32le with
# aquakv's own CLVQ generator, then src/quant/grid_builtin_data.cpp from them. Deterministic
# (fixed seeds). Usage: scripts/make_grids.sh [build-dir]   (needs a built `aquakv`; ~10 min on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-build}/aquakv
out=data/grids
mkdir -p "$out"
gen() {  # d n restarts iterations samples
  "$bin" grid generate -q -d "$1" -n "$2" --seed 1 --restarts "$3" --iterations "$4" --samples "$5" \
    -o "$out/CLVQ$1-$2.n$2xd$1.f32le"
}
gen 1 2 2 150 65536
gen 1 4 2 150 65536
gen 1 8 2 150 65536
gen 1 16 2 150 65536
gen 2 16 6 150 65536
gen 2 64 4 200 131072
gen 2 256 2 300 262144
gen 4 16 4 150 65536
gen 4 256 2 300 262144
gen 8 256 2 300 262144
"$bin" grid embed "$out"/CLVQ*.f32le -o src/quant/grid_builtin_data.cpp
