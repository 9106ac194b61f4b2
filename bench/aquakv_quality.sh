#!/bin/bash
# The AQUA-KV quality table of docs/RESULTS.md, end to end: calibrates the AQUA-KV
# configurations and the ablations on ../shared/data/calibration (never on the evaluation
# text), then runs `aquakv report` (perplexity, KL to the 16-bit cache, same-top-token rate,
# bits per value) and `aquakv passkey` on WikiText-2 test with the paper's protocol
# (context CTX, default 2048, 32 tokens per step, P = 4 sinks, B = 128 buffer).
#
#   bench/aquakv_quality.sh [OUT]          (default OUT=quality-run)
#
# Environment: AQUAKV (binary, default build/aquakv), MODEL (GGUF file, default the default
# model), AQUAKV_SHARED_DIR (default ../shared),
# CTX (tokens per window, default 2048), CHUNKS (windows of CTX tokens, default 8), THREADS (default 2), PASSKEY_LENS (default 4096),
# PASSKEY_TRIALS (default 2), STAGES (any of "calib main ablation extra passkey plan", default
# all; "plan": the bit plans, channel scales and grids of issue 11, calibrated and reported as
# OUT/plan_a and OUT/plan_b, rendered by bench/aquakv_table.py OUT plan_a plan_b).
# Existing adapter files in OUT/adapters are reused (delete them to recalibrate).
# Outputs: OUT/adapters/*.bin + *.json + *.log (fit reports with wall time), OUT/main/ and
# OUT/ablation/, OUT/extra/ (report.md, rows.jsonl, charts), OUT/passkey.json, OUT/passkey.md.
# bench/aquakv_table.py OUT renders the tables of docs/RESULTS.md from these files.
set -euo pipefail
A=${AQUAKV:-build/aquakv}
MODEL_ARGS=()
[[ -n ${MODEL:-} ]] && MODEL_ARGS=(-m "$MODEL")
OUT=${1:-quality-run}
SHARED=${AQUAKV_SHARED_DIR:-../shared}
CTX=${CTX:-2048}
CHUNKS=${CHUNKS:-8}
THREADS=${THREADS:-2}
PASSKEY_LENS=${PASSKEY_LENS:-4096}
PASSKEY_TRIALS=${PASSKEY_TRIALS:-2}
STAGES=${STAGES:-calib main ablation extra passkey plan}
GRIDS=$SHARED/reference/grids
TEXT=$SHARED/data/wikitext-2-raw-test.txt
CAL="-f $SHARED/data/calibration/wiki.txt -f $SHARED/data/calibration/c4.txt"
AD=$OUT/adapters
mkdir -p "$AD"
has() { [[ " $STAGES " == *" $1 "* ]]; }

# name, then calibrate options. Defaults: 16384 tokens in windows of 1024, seed 1, layer 0 higgs4.
# Names ending in _self calibrate on text the model samples itself (no -f; --gen-tokens 8192).
calibrate() {
  local name=$1; shift
  [[ -s $AD/$name.bin ]] && return 0
  echo "calibrate $name: $*" >&2
  local text=$CAL
  [[ $name == *_self ]] && text=
  "$A" calibrate "${MODEL_ARGS[@]}" $text -t "$THREADS" -o "$AD/$name.bin" --json "$AD/$name.json" -q "$@" \
    > "$AD/$name.log" 2>&1 || { cat "$AD/$name.log" >&2; exit 1; }
}
if has calib; then
  calibrate aq2                                     # keys and values 2-bit (higgs:2x16)
  calibrate aq25 -k higgs3 -v higgs2                # keys 3-bit, values 2-bit
  calibrate aq3 -k higgs3 -v higgs3                 # keys and values 3-bit
  calibrate abl_vonly --no-key-predictors           # ablations of aq2
  calibrate abl_konly --no-value-predictors
  calibrate abl_l0fp16 --layer0 fp16
  calibrate abl_r16 --rank 16
  calibrate abl_r64 --rank 64
  calibrate abl_signs -k higgs:2x16:seed1 -v higgs:2x16:seed1 --layer0 higgs:2x256:seed1
  calibrate aq2_self                                # aq2 on self-generated text
  calibrate aq2_64k --tokens 65536                  # aq2 on 4x the calibration text
  calibrate aq25v -k higgs2 -v higgs3               # the extra bit on values instead of keys
fi

report() {  # name, kv formats...
  local name=$1; shift
  local kvs=()
  for k in "$@"; do kvs+=(--kv "$k"); done
  "$A" report "${MODEL_ARGS[@]}" -f "$TEXT" -c "$CTX" --chunks "$CHUNKS" --step 32 -t "$THREADS" "${kvs[@]}" \
    -o "$OUT/$name" > "$OUT/$name.log" 2>&1 || { tail -5 "$OUT/$name.log" >&2; exit 1; }
}
# The stages that use aq2/aq25/aq3 calibrate them when missing, so that STAGES="main passkey"
# fits only those three (the whole calib stage fits twelve).
main_adapters() { calibrate aq2; calibrate aq25 -k higgs3 -v higgs2; calibrate aq3 -k higgs3 -v higgs3; }
has main && main_adapters && report main fp16 q8_0 q4_0 kivi4 kivi2 higgs4 higgs3 higgs2 \
  "aquakv:$AD/aq3.bin" "aquakv:$AD/aq25.bin" "aquakv:$AD/aq2.bin"
has ablation && report ablation fp16 "aquakv:$AD/aq2.bin" "aquakv:$AD/abl_konly.bin" \
  "aquakv:$AD/abl_vonly.bin" "aquakv:$AD/abl_l0fp16.bin" "aquakv:$AD/abl_r16.bin" \
  "aquakv:$AD/abl_r64.bin" "aquakv:$AD/abl_signs.bin" "aquakv:$AD/aq2_self.bin"
has extra && report extra fp16 "aquakv:$AD/aq2_64k.bin" "aquakv:$AD/aq25v.bin"
if has plan; then  # issue 11: bit plans (--bits), channel scales, better 2-bit grids
  calibrate aq2
  calibrate aq25 -k higgs3 -v higgs2
  calibrate pb23 --bits 2.3                         # plan at 2.3 bits, attention proxy
  calibrate pb215 --bits 2.15                       # plan at aq2's 2.15 bits
  calibrate pb20 --bits 2.0
  calibrate pb23mse --bits 2.3 --plan-proxy mse     # ablation: plain squared-error proxy
  calibrate aq2g4 -k higgs:4x256 -v higgs:4x256     # 4-dimensional 2-bit grid
  calibrate aq2g6 -k "higgs:6x4096:grid=$GRIDS/EDEN6-4096.n4096xd6.f32le" \
    -v "higgs:6x4096:grid=$GRIDS/EDEN6-4096.n4096xd6.f32le"
  calibrate aq2w --channel-scales both              # aq2 + query / W_o weighted channel scales
  calibrate pb23w --bits 2.3 --channel-scales both
  calibrate pb23g4w --bits 2.3 --channel-scales both --plan-codecs higgs:4x16,higgs:4x256,higgs3,higgs4
  calibrate pb20w --bits 2.0 --channel-scales both
  calibrate pb23n --bits 2.3 --channel-scales both --plan-norm layer
  report plan_a fp16 "aquakv:$AD/aq2.bin" "aquakv:$AD/aq25.bin" "aquakv:$AD/pb23.bin" "aquakv:$AD/pb215.bin" \
    "aquakv:$AD/pb20.bin" "aquakv:$AD/pb23mse.bin" "aquakv:$AD/aq2g4.bin"
  report plan_b fp16 "aquakv:$AD/aq2w.bin" "aquakv:$AD/pb23w.bin" "aquakv:$AD/pb23g4w.bin" "aquakv:$AD/pb20w.bin" \
    "aquakv:$AD/aq2g6.bin"
fi
if has passkey; then
  main_adapters
  "$A" passkey "${MODEL_ARGS[@]}" -c "$PASSKEY_LENS" --depths 0.1,0.5,0.9 --trials "$PASSKEY_TRIALS" -t "$THREADS" \
    --kv fp16 --kv q8_0 --kv q4_0 --kv kivi4 --kv kivi2 --kv higgs4 --kv higgs3 --kv higgs2 \
    --kv "aquakv:$AD/aq3.bin" --kv "aquakv:$AD/aq25.bin" --kv "aquakv:$AD/aq2.bin" \
    --json "$OUT/passkey.json" > "$OUT/passkey.md" 2> "$OUT/passkey.log"
fi
echo "aquakv_quality: results in $OUT" >&2
