#!/usr/bin/env bash
# CLI test of `aquakv inspect` (run by CTest): a valid file prints its metadata and tensors and
# exits 0; a missing file and every committed bad fuzz-corpus input give exactly one stderr
# line "aquakv: error: ..." and exit status 1 (never a crash or another status).
# Usage: inspect.sh AQUAKV_BINARY TESTS_DATA_DIR
set -u
export OPENBLAS_NUM_THREADS=1
bin=$1
data=$2
fail=0
err=$(mktemp)
trap 'rm -f "$err"' EXIT

out=$("$bin" inspect -m "$data/gguf/all_types_v3.gguf" 2>"$err")
rc=$?
if [[ $rc -ne 0 ]] || ! grep -q "test.nested3" <<<"$out" || ! grep -q "q8_0_tensor *Q8_0 *64 x 2" <<<"$out"; then
  echo "FAIL: valid fixture: rc=$rc"; echo "$out" | head -5; cat "$err"; fail=1
fi

check_error() {  # file
  "$bin" inspect -m "$1" >/dev/null 2>"$err"
  local rc=$?
  if [[ $rc -eq 0 ]]; then return 0; fi  # corpus inputs that happen to be valid
  n_errors=$((n_errors + 1))
  if [[ $rc -ne 1 || $(wc -l <"$err") -ne 1 ]] || ! grep -q "^aquakv: error: " "$err"; then
    echo "FAIL: $1: rc=$rc, stderr:"; cat "$err"; fail=1
  fi
}

"$bin" inspect -m /nonexistent/model.gguf >/dev/null 2>"$err"
if [[ $? -ne 1 ]] || ! grep -q "^aquakv: error: /nonexistent/model.gguf: cannot open" "$err"; then
  echo "FAIL: missing file"; cat "$err"; fail=1
fi
n_errors=0
# Every third corpus input keeps this test at a few seconds (each run starts the tool);
# GgufBad.CorpusReplay parses all of them in-process.
i=0
for f in "$data"/gguf_corpus/*; do
  i=$((i + 1))
  if (( i % 3 == 0 )); then check_error "$f"; fi
done
if [[ $n_errors -lt 10 ]]; then echo "FAIL: only $n_errors corpus inputs rejected"; fail=1; fi
[[ $fail -eq 0 ]] && echo "ok: inspect ($n_errors bad corpus inputs rejected with one line)"
exit $fail
