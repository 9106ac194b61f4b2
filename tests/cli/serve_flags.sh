#!/usr/bin/env bash
# CLI test of `aquakv serve` flag checks (run by CTest): bad values are refused before the model
# loads, with exactly one stderr line "aquakv: error: ..." naming the flag and exit status 1;
# a port already in use is refused the same way after the model loads (with $AQUAKV_MODEL).
# Usage: serve_flags.sh AQUAKV_BINARY TESTS_DATA_DIR
set -u
bin=$1
fail=0
err=$(mktemp)
tmp=$(mktemp -d)
trap 'rm -f "$err"; rm -rf "$tmp"' EXIT

expect_error() {  # pattern, args...
  local pat=$1
  shift
  timeout 60 "$bin" serve -m /nonexistent/model.gguf "$@" >/dev/null 2>"$err"
  local rc=$?
  if [[ $rc -ne 1 || $(wc -l <"$err") -ne 1 ]] || ! grep -q "^aquakv: error: .*$pat" "$err"; then
    echo "FAIL: serve $*: rc=$rc, stderr:"; cat "$err"; fail=1
  fi
}
expect_error "--kv-budget 'lots'" --kv-budget lots
expect_error "--kv-budget '12X'" --kv-budget 12X
expect_error "--kv-budget '1e30'" --kv-budget 1e30
expect_error "--port" --port 70000
expect_error "--parallel" --parallel 0
expect_error "--timeout" --timeout 0
expect_error "--max-body-bytes" --max-body-bytes 10
expect_error "--slot-kv and --slot-zstd need --slot-dir" --slot-kv q4_0
expect_error "--capacity" -c 512 --capacity 600
expect_error "--top-p" --top-p 2
expect_error "--slot-dir" --slot-dir "$tmp/missing/dir"
# Only the model is left to check: the model path is named.
expect_error "/nonexistent/model.gguf" --kv-budget 256M --port 0

if [[ -n "${AQUAKV_MODEL:-}" ]]; then
  # Hold a port with a first server, then ask a second one for the same port.
  OPENBLAS_NUM_THREADS=1 "$bin" serve -m "$AQUAKV_MODEL" --port 0 -c 64 --kv-probe 16 -t 1 2>"$tmp/log" &
  first=$!
  port=""
  for _ in $(seq 300); do
    port=$(sed -n 's#.*listening on http://127.0.0.1:\([0-9]*\).*#\1#p' "$tmp/log")
    [[ -n "$port" ]] && break
    sleep 0.1
  done
  if [[ -z "$port" ]]; then
    echo "FAIL: the first server did not start"; cat "$tmp/log"; fail=1
  else
    timeout 120 "$bin" serve -m "$AQUAKV_MODEL" --port "$port" -c 64 --kv-probe 16 -t 1 >/dev/null 2>"$err"
    rc=$?
    if [[ $rc -ne 1 ]] || ! grep -q "^aquakv: error: --host 127.0.0.1 --port $port: cannot listen" "$err"; then
      echo "FAIL: port in use: rc=$rc"; cat "$err"; fail=1
    fi
  fi
  kill -TERM "$first"
  wait "$first"
fi
[[ $fail -eq 0 ]] && echo "serve flag checks: ok"
exit $fail
