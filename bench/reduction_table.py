#!/usr/bin/env python3
"""The table and frontier chart of docs/RESULTS.md ("Token eviction and key-channel pruning")
from an `aquakv report` directory (rows.jsonl: quality rows at one context, speed rows) and
`aquakv passkey --json` files. Prints Markdown to stdout; computes nothing new except passkey
sums per (format, length) and which rows are on the memory/quality frontier (no other row has
both fewer bits per value and a lower mean KL).

  python3 bench/reduction_table.py REPORT_DIR... [--passkey P.json ...] [--chart OUT.png]
      [--label OLD=NEW ...]

The chart (gnuplot, as `aquakv report` draws its own) plots mean KL to fp16 against bits per
value, log scale, every row labelled, the frontier joined by a line.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile


def load_rows(report_dirs):
    """Quality and speed rows of every report; a format in several reports keeps its first."""
    quality, decode = {}, {}
    for d in report_dirs:
        with open(d if d.endswith(".jsonl") else os.path.join(d, "rows.jsonl")) as f:
            for line in f:
                r = json.loads(line)
                if r.get("ppl") is not None:
                    quality.setdefault(r["kv"], r)
                if r.get("decode_tps") is not None:
                    decode.setdefault(r["kv"], r)
    return quality, decode


def load_passkey(files):
    cells = {}  # (kv, len) -> [correct, trials]
    for path in files:
        with open(path) as f:
            doc = json.load(f)
        for c in doc["cells"]:
            key = (c["kv"], c["len"])
            got = cells.setdefault(key, [0, 0])
            got[0] += c["correct"]
            got[1] += c["trials"]
    return cells


def frontier(rows):
    """kv names no other row dominates (fewer bits and lower KL, one of them strictly)."""
    out = set()
    for a in rows:
        dominated = any(
            b is not a and b["bits_per_value"] <= a["bits_per_value"] and b["kl_mean"] <= a["kl_mean"]
            and (b["bits_per_value"] < a["bits_per_value"] or b["kl_mean"] < a["kl_mean"]) for b in rows)
        if not dominated:
            out.add(a["kv"])
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("report", nargs="+", help="aquakv report output directories (or rows.jsonl files)")
    ap.add_argument("--passkey", nargs="*", default=[])
    ap.add_argument("--chart")
    ap.add_argument("--label", nargs="*", default=[], help="OLD=NEW: shown names replace OLD by NEW (e.g. a path)")
    a = ap.parse_args()
    pairs = [x.split("=", 1) for x in a.label]

    def show(kv):
        for old, new in pairs:
            kv = kv.replace(old, new)
        return kv
    quality, decode = load_rows(a.report)
    pk = {}
    for (kv, n), got in load_passkey(a.passkey).items():  # matched by shown name
        have = pk.setdefault((show(kv), n), [0, 0])
        have[0] += got[0]
        have[1] += got[1]
    lens = sorted({n for (_, n) in pk})
    rows = list(quality.values())
    front = frontier(rows)
    head = ["format", "windows", "bits/value", "PPL", "PPL ratio", "KL mean", "KL p99", "same top"]
    head += [f"passkey {n}" for n in lens] + ["decode tok/s", "frontier"]
    print("| " + " | ".join(head) + " |")
    print("|---|" + "--:|" * (len(head) - 2) + ":-:|")
    for r in rows:
        kv = r["kv"]
        def num(key, fmt, scale=1.0, unit=""):
            return "-" if r.get(key) is None else format(r[key] if scale == 1.0 else scale * r[key], fmt) + unit

        cells = [f"`{show(kv)}`", num("windows", "d"), num("bits_per_value", ".3f"), f"{num('ppl', '.3f')} ± {num('ppl_se', '.3f')}",
                 num("ppl_ratio", ".4f"), num("kl_mean", ".4f"), num("kl_p99", ".3f"), num("same_top", ".1f", 100, "%")]
        for n in lens:
            c = pk.get((show(kv), n))
            cells.append(f"{c[0]}/{c[1]}" if c else "-")
        d = decode.get(kv)
        cells.append(f"{d['decode_tps']:.1f}" if d else "-")
        cells.append("yes" if kv in front else "")
        print("| " + " | ".join(cells) + " |")
    if a.chart:
        draw(rows, front, show, a.chart)


def draw(rows, front, show, out):
    with tempfile.TemporaryDirectory() as tmp:
        pts = os.path.join(tmp, "points.dat")
        line = os.path.join(tmp, "frontier.dat")
        labels = ""
        with open(pts, "w") as f:
            # Rows sorted by bits; labels alternate above and below their point so that
            # neighbours do not overprint each other.
            for i, r in enumerate(sorted(rows, key=lambda r: r["bits_per_value"])):
                name = show(r["kv"]).replace('"', "")
                y = max(r["kl_mean"], 1e-5)
                f.write(f"{r['bits_per_value']} {y}\n")
                labels += f'set label {i + 1} "{name}" at {r["bits_per_value"]},{y} offset 0.7,{0.8 if i % 2 == 0 else -0.9} font ",8"\n'

        with open(line, "w") as f:
            for r in sorted((r for r in rows if r["kv"] in front), key=lambda r: r["bits_per_value"]):
                f.write(f"{r['bits_per_value']} {max(r['kl_mean'], 1e-5)}\n")
        gp = f"""set terminal pngcairo size 1000,640 font ",10"
set output "{out}"
set logscale y
set xlabel "bits per original value (every stored byte, at the end of a 2048-token window)"
set ylabel "mean KL to fp16 (nats/token)"
set grid
set xrange [0:21]
set key top right
{labels}
plot "{line}" using 1:2 with lines lw 2 lc rgb "#888888" title "frontier (fp16 drawn at KL 1e-5)", \\
     "{pts}" using 1:2 with points pt 7 ps 1.2 lc rgb "#1f77b4" notitle
"""
        subprocess.run(["gnuplot"], input=gp.encode(), check=True)


if __name__ == "__main__":
    sys.exit(main())
