#!/usr/bin/env python3
"""Markdown tables of docs/RESULTS.md ("AQUA-KV quality") from the outputs of
bench/aquakv_quality.sh: OUT/main/rows.jsonl, OUT/ablation/rows.jsonl, OUT/passkey.json and the
calibration reports OUT/adapters/*.json. Prints Markdown to stdout; computes nothing new except
the asymptotic codes+scales bits (the formula of docs/AQUAKV.md) and per-config means of the
calibration report.

  python3 bench/aquakv_table.py OUT                  # the tables of bench/aquakv_quality.sh
  python3 bench/aquakv_table.py OUT REPORT [...]     # one table of the reports OUT/REPORT/rows.jsonl

Bits of AQUA-KV configurations come from their calibration report (OUT/adapters/NAME.json:
the bit plan's figure, else each layer's key and value codec), so bit plans and other grids
are counted exactly; older reports without codecs fall back to the AQUA table below.
"""
import math
import json
import os
import sys

L = 30  # layers of the default model
HIGGS = {"higgs2": 2 + 16 / 192, "higgs3": 3 + 16 / 192, "higgs4": 4 + 16 / 192}
# bits per value of compressed tokens (codes + scales): llama.cpp blocks of 32 with an fp16
# scale; KIVI: b bits + fp16 scale and zero point per group of 32; HIGGS d=2: log2(n)/2 + 16/g.
PLAIN = {"fp16": 16.0, "q8_0": 8.5, "q4_0": 4.5, "kivi4": 5.0, "kivi2": 3.0, **HIGGS}
# AQUA-KV configurations of bench/aquakv_quality.sh: key codec, value codec, layer-0 codec.
AQUA = {
    "aq2": ("higgs2", "higgs2", "higgs4", "keys 2-bit, values 2-bit, layer 0 4-bit"),
    "aq25": ("higgs3", "higgs2", "higgs4", "keys 3-bit, values 2-bit, layer 0 4-bit"),
    "aq25v": ("higgs2", "higgs3", "higgs4", "keys 2-bit, values 3-bit, layer 0 4-bit"),
    "aq3": ("higgs3", "higgs3", "higgs4", "keys 3-bit, values 3-bit, layer 0 4-bit"),
    "abl_konly": ("higgs2", "higgs2", "higgs4", "aq2 with key predictors only"),
    "abl_vonly": ("higgs2", "higgs2", "higgs4", "aq2 with value predictors only"),
    "abl_l0fp16": ("higgs2", "higgs2", "fp16", "aq2 with layer 0 exact (fp16)"),
    "abl_r16": ("higgs2", "higgs2", "higgs4", "aq2 with rank-16 predictors"),
    "abl_r64": ("higgs2", "higgs2", "higgs4", "aq2 with rank-64 predictors"),
    "abl_signs": ("higgs2", "higgs2", "higgs4", "aq2 with random Hadamard signs (seed 1)"),
    "aq2_self": ("higgs2", "higgs2", "higgs4", "aq2 calibrated on 8192 self-generated tokens"),
    "aq2_64k": ("higgs2", "higgs2", "higgs4", "aq2 calibrated on 65536 text tokens (4x)"),
}
# Configurations of issue 11 (bit plans, channel scales, grids): name -> description.
DESCRIBED = {
    "aq2g4": "keys and values 4x256 grid (2 bits), layer 0 4-bit",
    "aq2g6": "keys and values 6x4096 grid (EDEN6-4096, 2 bits), layer 0 4-bit",
    "aq2w": "aq2 with channel scales (keys: query-weighted, values: W_o-weighted)",
    "pb23": "bit plan at 2.3 bits (attention proxy), layer 0 4-bit",
    "pb23mse": "bit plan at 2.3 bits (plain MSE proxy), layer 0 4-bit",
    "pb215": "bit plan at 2.15 bits (attention proxy)",
    "pb20": "bit plan at 2.0 bits (attention proxy)",
    "pb23s": "bit plan at 2.3 bits + channel scales, values unweighted (older binary)",
    "pb23w": "bit plan at 2.3 bits + channel scales (query / W_o weighted)",
    "pb23n": "pb23w with per-layer relative costs (--plan-norm layer)",
    "pb23g4w": "pb23w with the 4x256 grid as the 2-bit candidate",
    "pb20w": "bit plan at 2.0 bits + channel scales (query / W_o weighted)",
}
OUT = "quality-run"


def spec_bits(spec):
    """Bits per value (codes + scales) of a canonical codec spec of aquakv."""
    spec = spec.split("+")[0]
    if spec in ("fp16", "f16"):
        return 16.0
    if spec in HIGGS:
        return HIGGS[spec]
    parts = spec.split(":")
    if parts[0] == "higgs":
        d, n = (int(x) for x in parts[1].split("x"))
        g = next(int(p[1:]) for p in parts[2:] if p.startswith("g"))
        return math.log2(n) / d + 16 / g
    raise ValueError("unknown codec " + spec)


def adapter_name(kv):
    """"aquakv:/dir/aq2.bin,p=4" -> "aq2"."""
    return os.path.splitext(os.path.basename(kv.split(":", 1)[1].split(",")[0]))[0]


def codes_bits(kv):
    if kv in PLAIN:
        return PLAIN[kv]
    j = calib(OUT, kv)
    if j and "plan" in j:
        return j["plan"]["bits_per_value"]
    if j and j["layers"] and "k_codec" in j["layers"][0]:
        b = [spec_bits(l["k_codec"]) + spec_bits(l["v_codec"]) for l in j["layers"]]
        return sum(b) / (2 * len(b))
    k, v, l0 = AQUA[adapter_name(kv)][:3]
    b = lambda c: 16.0 if c == "fp16" else HIGGS[c]
    return ((L - 1) * (b(k) + b(v)) / 2 + b(l0)) / L


def label(kv):
    if not kv.startswith("aquakv:"):
        return kv, ""
    name = adapter_name(kv)
    if name in AQUA:
        return name, AQUA[name][3]
    return name, DESCRIBED.get(name, "")


def read_rows(path):
    with open(path) as f:
        return [json.loads(x) for x in f if x.strip()]


def calib(out, kv):
    if not kv.startswith("aquakv:"):
        return None
    p = os.path.join(out, "adapters", adapter_name(kv) + ".json")
    return json.load(open(p)) if os.path.exists(p) else None


def mean_rel(j, key):
    xs = [l[key] for l in j["layers"] if l["layer"] >= 1 and l.get(key) is not None]
    return sum(xs) / len(xs) if xs else float("nan")


def passkey(out):
    p = os.path.join(out, "passkey.json")
    if not os.path.exists(p):
        return {}, None
    j = json.load(open(p))
    acc, lens = {}, set()
    for c in j["cells"]:
        a = acc.setdefault(c["kv"], [0, 0])
        a[0] += c["correct"]
        a[1] += c["trials"]
        lens.add(c["len"])
    return acc, max(lens)


def table(out, names, with_passkey):
    # A later report's row for a configuration already seen (its own fp16 base, or a re-run)
    # replaces the earlier row in place.
    rows, where = [], {}
    for name in names:
        for r in read_rows(os.path.join(out, name, "rows.jsonl")):
            if r["kv"] in where:
                rows[where[r["kv"]]] = r
            else:
                where[r["kv"]] = len(rows)
                rows.append(r)
    pk, pk_len = passkey(out) if with_passkey else ({}, None)
    head = ("| cache | configuration | bits/value, codes+scales | bits/value at 2048 tokens, all "
            "overheads (measured) | PPL | PPL ratio | KL mean | KL p99 | same top token |")
    sep = "|---|---|--:|--:|--:|--:|--:|--:|--:|"
    if pk:
        head += f" passkey @ {pk_len} |"
        sep += "--:|"
    head += " calibration (wall) |"
    sep += "--:|"
    lines = [head, sep]
    for r in rows:
        if r.get("ppl") is None:
            continue
        kv = r["kv"]
        cache, cfg = label(kv)
        c = calib(out, kv)
        line = (f"| {cache} | {cfg} | {codes_bits(kv):.3f} | {r['bits_per_value']:.3f} | "
                f"{r['ppl']:.4f} ± {r['ppl_se']:.4f} | {r['ppl_ratio']:.4f} | {r['kl_mean']:.4f} | "
                f"{r['kl_p99']:.4f} | {100 * r['same_top']:.2f}% |")
        if pk:
            a = pk.get(kv)
            line += f" {a[0]}/{a[1]} |" if a else " - |"
        line += f" {c['total_seconds']:.0f} s |" if c else " - |"
        lines.append(line)
    return "\n".join(lines)


def calib_table(out):
    lines = ["| configuration | tokens (train / val rows) | K predictor val relMSE, mean over layers 1-29 "
             "| V predictor val relMSE | K̂ reconstruction relMSE | V̂ reconstruction relMSE | wall | capture | fit | peak memory |",
             "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for name in list(AQUA) + list(DESCRIBED):
        p = os.path.join(out, "adapters", name + ".json")
        if not os.path.exists(p):
            continue
        j = json.load(open(p))
        lines.append(
            f"| {name} | {j['train_rows']} / {j['val_rows']} | {mean_rel(j, 'k_val'):.4f} | "
            f"{mean_rel(j, 'v_val'):.4f} | {mean_rel(j, 'k_recon_val'):.4f} | "
            f"{mean_rel(j, 'v_recon_val'):.4f} | {j['total_seconds']:.0f} s | "
            f"{j['capture_seconds']:.0f} s | {j['fit_seconds']:.0f} s | "
            f"{j['peak_rss_bytes'] / 2**20:.0f} MiB |")
    return "\n".join(lines)


def main():
    global OUT
    out = OUT = sys.argv[1] if len(sys.argv) > 1 else "quality-run"
    if len(sys.argv) > 2:
        print(table(out, sys.argv[2:], False) + "\n")
        print("### Calibration\n\n" + calib_table(out) + "\n")
        return
    if os.path.exists(os.path.join(out, "main", "rows.jsonl")):
        print("### Main table\n\n" + table(out, ["main"], True) + "\n")
    abl = [n for n in ("ablation", "extra", "extra2") if os.path.exists(os.path.join(out, n, "rows.jsonl"))]
    if abl:
        print("### Ablations\n\n" + table(out, abl, False) + "\n")
    print("### Calibration\n\n" + calib_table(out) + "\n")


if __name__ == "__main__":
    main()
