#!/bin/bash
# Checks that more threads are never slower: runs `aquakv bench` with -t 1 and -t N (default
# N=2) alternately, ROUNDS times (default 3), for prefill and decode at each depth, and compares
# the medians over the rounds of each test's median tokens/s. Fails (exit 1) when -t N is slower
# than -t 1 by more than TOL percent (default 5: the noise of a shared machine) on any test.
#
#   bench/threads_check.sh                   (default DEPTHS=0,512 P=128 N=64 R=3)
#
# Environment: AQUAKV (binary, default build/aquakv), MODEL (GGUF file, default the default
# model), THREADS (N), DEPTHS, P, N, R (as aquakv bench's -d -p -n -r), ROUNDS, TOL.
# Prints one line per test: tokens/s at 1 and N threads, the ratio, and ok/SLOWER. The pool's
# sync line (regions per token, wait, regions run inline because the cores were busy) is
# printed for the N-thread runs (see util/parallel.h).
set -euo pipefail
A=${AQUAKV:-build/aquakv}
MODEL_ARGS=()
[[ -n ${MODEL:-} ]] && MODEL_ARGS=(-m "$MODEL")
T=${THREADS:-2}
DEPTHS=${DEPTHS:-0,512}
P=${P:-128}
N=${N:-64}
R=${R:-3}
ROUNDS=${ROUNDS:-3}
TOL=${TOL:-5}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for ((i = 0; i < ROUNDS; i++)); do
  for t in 1 "$T"; do
    "$A" bench "${MODEL_ARGS[@]}" --no-cost -r "$R" -d "$DEPTHS" -p "$P" -n "$N" -t "$t" >>"$tmp/t$t.txt"
  done
done
grep '^# sync' "$tmp/t$T.txt" || true
python3 - "$tmp/t1.txt" "$tmp/t$T.txt" "$T" "$TOL" <<'PY'
import statistics, sys
def medians(path):
    runs = {}
    for line in open(path):
        cells = [c.strip() for c in line.split("|")]
        if len(cells) < 7 or "@" not in cells[5]:
            continue
        runs.setdefault(cells[5], []).append(float(cells[6].split()[0]))
    return {k: statistics.median(v) for k, v in runs.items()}
one, many = medians(sys.argv[1]), medians(sys.argv[2])
t, tol = sys.argv[3], float(sys.argv[4])
if not one or one.keys() != many.keys():
    sys.exit(f"threads_check: could not read matching bench tables ({sorted(one)} vs {sorted(many)})")
bad = 0
for test in one:
    ratio = many[test] / one[test]
    ok = ratio >= 1 - tol / 100
    bad += not ok
    print(f"{test}: -t 1 {one[test]:.2f} t/s, -t {t} {many[test]:.2f} t/s, ratio {ratio:.2f} {'ok' if ok else 'SLOWER'}")
sys.exit(1 if bad else 0)
PY
