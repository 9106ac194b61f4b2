#!/usr/bin/env bash
# CTest: starts `aquakv serve` on a free loopback port and drives it with the official openai
# Python package (tests/serve/openai_client.py), then stops it with SIGTERM and checks a clean
# exit. The package comes from PyPI into a venv under the build directory (or
# $AQUAKV_SERVE_VENV); without network access the test is skipped (exit 77), as it is without
# $AQUAKV_MODEL. Bounded: 60 s to start, 600 s for the client.
# Usage: serve_openai.sh AQUAKV_BINARY VENV_DIR
set -u
bin=$1
venv=${AQUAKV_SERVE_VENV:-$2}
here=$(cd "$(dirname "$0")" && pwd)
if [[ -z "${AQUAKV_MODEL:-}" ]]; then echo "SKIP: AQUAKV_MODEL not set"; exit 77; fi
if ! "$venv/bin/python" -c "import openai" 2>/dev/null; then
  python3 -m venv "$venv" >/dev/null 2>&1 || { echo "SKIP: cannot create a venv at $venv (python3-venv)"; exit 77; }
  if ! timeout 180 "$venv/bin/pip" install -q --disable-pip-version-check openai >/dev/null 2>&1; then
    echo "SKIP: pip cannot install openai from PyPI (no network?)"; exit 77
  fi
fi
tmp=$(mktemp -d)
log=$tmp/server.log
mkdir "$tmp/slots"
server=""
cleanup() {
  [[ -n "$server" ]] && kill -KILL "$server" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
OPENBLAS_NUM_THREADS=1 "$bin" serve -m "$AQUAKV_MODEL" --port 0 --kv q8_0 -c 1024 --parallel 8 -t 2 \
  --api-key test-key --slot-dir "$tmp/slots" --slot-idle-s 0 --max-tokens 256 2>"$log" &
server=$!
port=""
for _ in $(seq 600); do
  port=$(sed -n 's#.*listening on http://127.0.0.1:\([0-9]*\).*#\1#p' "$log")
  [[ -n "$port" ]] && break
  kill -0 "$server" 2>/dev/null || break
  sleep 0.1
done
if [[ -z "$port" ]]; then echo "FAIL: the server did not start"; cat "$log"; exit 1; fi
echo "server on port $port"
timeout 600 "$venv/bin/python" "$here/openai_client.py" "http://127.0.0.1:$port" test-key
rc=$?
kill -TERM "$server"
for _ in $(seq 100); do kill -0 "$server" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$server" 2>/dev/null; then echo "FAIL: the server did not stop on SIGTERM"; rc=1; fi
wait "$server"
src=$?
server=""
if [[ $src -ne 0 ]]; then echo "FAIL: the server exited with $src"; rc=1; fi
if grep -qi "error\|abort\|terminate" "$log"; then echo "server log:"; cat "$log"; fi
if [[ -n "$(ls -A "$tmp/slots")" ]]; then echo "FAIL: slot files left behind: $(ls "$tmp/slots")"; rc=1; fi
exit $rc
