#!/usr/bin/env python3
"""llama.cpp side by side with `aquakv perplexity` / `aquakv report`.

For one model, text, context size, window count and thread count, runs llama.cpp (through
llama-cpp-python, built once into ~/.cache/aquakv/ref-venv by scripts/ref_venv.sh) with its KV
cache types f16, q8_0 and q4_0 and prints rows in the same JSON-lines format as `aquakv report`:

  perplexity  same protocol as aquakv: the text tokenized once (BOS only at the start, when the
              model's add_bos_token asks for it, as llama.cpp's perplexity tool decides),
              non-overlapping windows of CTX tokens (incomplete tail dropped), fresh cache per
              window, NLL over every predicted position (ctx - 1 per window; llama.cpp's own
              perplexity tool scores only the second half of each window, we do not), in float64.
  KL          per position KL(f16 || type) from full rows in float64 (exact; aquakv uses the
              compact base file, see include/aquakv/eval/logits_file.h), mean, p99, p99.9
              (numpy 'linear' percentiles, the method of eval/stats.h), same-top-token rate.
  speed       prefill tokens/s of a CTX-token prompt (batches of 512) and decode tokens/s of
              --decode-tokens single-token steps after a (CTX - decode)-token prompt.

Flash attention is on for every type (llama.cpp needs it for quantized V caches; using it for
f16 too keeps the types' only difference the cache). With --aquakv-json (the --json output of
`aquakv perplexity` on the same model, text and -c) the script checks that both tokenizers gave
the same token ids window by window (FNV-1a 64 hashes, eval/logits_file.h), and refuses to
compare otherwise.

Usage:
  ~/.cache/aquakv/ref-venv/bin/python bench/llama_cpp_eval.py -m MODEL -f TEXT -c 512 \
      --chunks 8 -t 2 [--types f16,q8_0,q4_0] [--aquakv-json run.json] [--out rows.jsonl]
"""
import argparse
import json
import os
import platform
import struct
import sys
import time

import numpy as np

import llama_cpp_common as lc
from llama_cpp_common import TYPES


def fnv1a64_tokens(ids):
    """FNV-1a 64 over the ids as little-endian int32 (eval/logits_file.h hash_tokens)."""
    h = 0xCBF29CE484222325
    for b in np.asarray(ids, dtype="<i4").tobytes():
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def fnv1a64(data, h=0xCBF29CE484222325):
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def model_fingerprint(path):
    """eval/engine_runner.h model_fingerprint: FNV-1a 64 of the u64 size, then the first 4 MiB."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(4 << 20)
    return fnv1a64(head, fnv1a64(struct.pack("<Q", size)))


class LogitsFileWriter:
    """Writes aquakv's base-logits file (format: include/aquakv/eval/logits_file.h), so that
    `aquakv perplexity --kl-base FILE` measures KL(llama.cpp f16 || aquakv) position by position."""

    MASS_EPS = 1e-4

    def __init__(self, model_path, text_path, ctx, hashes, k_max=1024, label="llama.cpp f16"):
        self.K_MAX, self.label = k_max, label
        self.model_path, self.text_path, self.ctx, self.hashes = model_path, text_path, ctx, hashes
        self.rows = []

    def add_window(self, lp, targets):
        """lp: (n, V) float64 log-probs; targets: (n,) next-token ids. Rows are appended, so a
        window may come in consecutive blocks of positions."""
        k = min(self.K_MAX, lp.shape[1])
        top = np.argpartition(-lp, k - 1, axis=1)[:, :k]
        for i in range(lp.shape[0]):
            row = lp[i]
            ids = top[i][np.lexsort((top[i], -row[top[i]]))]  # decreasing log p, ties by id
            p = np.exp(row[ids])
            kept, n = 0.0, 0
            while n < k:
                kept += p[n]
                n += 1
                if 1.0 - kept <= self.MASS_EPS:
                    break
            mask = np.ones(row.shape[0], dtype=bool)
            mask[ids[:n]] = False
            p_rest = float(np.exp(row[mask]).sum())
            entries = b"".join(struct.pack("<If", int(t), float(row[t])) for t in ids[:n])
            self.rows.append(struct.pack("<ffH", float(-row[targets[i]]), p_rest, n) + entries)

    def save(self, path):
        def pstr(s):
            b = s.encode("utf-8")
            return struct.pack("<I", len(b)) + b
        out = bytearray(b"AQKVLGTS") + struct.pack("<IId", 1, self.K_MAX, self.MASS_EPS)
        out += struct.pack("<QQQQQ", self.n_vocab, self.ctx, self.ctx - 1, len(self.hashes),
                           model_fingerprint(self.model_path))
        out += pstr(os.path.basename(self.model_path)) + pstr(self.label)
        out += pstr(os.path.basename(self.text_path))
        for h in self.hashes:
            out += struct.pack("<Q", h)
        for r in self.rows:
            out += r
        out += struct.pack("<Q", fnv1a64(bytes(out)))
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(out)
        os.replace(tmp, path)


ROW_BLOCK = 128  # positions whose float64 log-probs are held at once


def log_softmax64(scores):
    x = scores.astype(np.float64)
    m = x.max(axis=1, keepdims=True)
    return x - (m + np.log(np.exp(x - m).sum(axis=1, keepdims=True)))


def make_llama(args, kv, n_ctx, logits_all=True):
    return lc.make_llama(args.model, kv, n_ctx, args.threads, True, logits_all)


def run_window(llm, window):
    llm.reset()
    llm.eval(window)
    return np.array(llm.scores[: len(window) - 1], dtype=np.float32)  # rows predicting 1..ctx-1


def stats(values):
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(np.sqrt(v.var(ddof=1) / len(v))) if len(v) > 1 else 0.0


def measure_speed(args, kv, ctx, ids):
    """Flash attention on, as for the perplexity rows (see the top of this file)."""
    return lc.measure_speed(args.model, kv, ctx, lc.speed_prompt(ids, ctx), args.decode_tokens,
                            args.threads, True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("-f", "--file", required=True, help="evaluation text")
    ap.add_argument("-c", "--ctx", type=int, required=True)
    ap.add_argument("--chunks", type=int, default=0, help="windows to evaluate (0 = all)")
    ap.add_argument("-t", "--threads", type=int, default=os.cpu_count())
    ap.add_argument("--types", default="f16,q8_0,q4_0")
    ap.add_argument("--bos", choices=["auto", "on", "off"], default="auto",
                    help="BOS at the start of the text: auto = the model's add_bos_token")
    ap.add_argument("--aquakv-json", help="aquakv perplexity --json result to check token ids")
    ap.add_argument("--speed-ctx", default="", help="contexts for the speed rows, e.g. 512,2048")
    ap.add_argument("--decode-tokens", type=int, default=32)
    ap.add_argument("--no-ppl", action="store_true", help="speed rows only")
    ap.add_argument("--out", help="append the rows (JSON lines) to this file")
    ap.add_argument("--logits-top", type=int, default=1024,
                    help="tokens kept per position in --save-logits (aquakv's --logits-top)")
    ap.add_argument("--save-logits", help="write the f16 run's logits in aquakv's base-logits "
                    "format, for `aquakv perplexity --kl-base FILE`")
    args = ap.parse_args()
    lc.import_llama_cpp()
    llama_cpp = lc.llama_cpp

    types = [t for t in args.types.split(",") if t]
    for t in types:
        if t not in TYPES:
            sys.exit(f"--types: unknown cache type {t!r} (known: {', '.join(TYPES)})")
    if types[0] != "f16" and not args.no_ppl:
        types = ["f16"] + [t for t in types if t != "f16"]  # the KL base comes first

    with open(args.file, encoding="utf-8") as f:
        text = f.read()
    ids, model_adds_bos = lc.tokenize(args.model, text, args.bos)
    n_full = len(ids) // args.ctx
    n_win = min(n_full, args.chunks) if args.chunks > 0 else n_full
    if n_win == 0:
        sys.exit(f"the text has {len(ids)} tokens, fewer than one window of -c {args.ctx}")
    windows = [ids[w * args.ctx:(w + 1) * args.ctx] for w in range(n_win)]
    hashes = [fnv1a64_tokens(w) for w in windows]
    with_bos = args.bos == "on" or (args.bos == "auto" and model_adds_bos)
    print(f"llama.cpp {llama_cpp.__version__}: {len(ids)} tokens (BOS at start: {with_bos}, "
          f"model add_bos_token={model_adds_bos}), {n_win} windows of {args.ctx}, "
          f"{args.threads} threads", file=sys.stderr)

    if args.aquakv_json:
        with open(args.aquakv_json) as f:
            theirs = json.load(f)
        ours = [int(h, 16) for h in theirs["window_hashes"]]
        if theirs.get("ctx") != args.ctx:
            sys.exit(f"--aquakv-json: ctx {theirs.get('ctx')} but -c {args.ctx}")
        n = min(len(ours), len(hashes))
        bad = [w for w in range(n) if ours[w] != hashes[w]]
        if bad or n == 0:
            sys.exit(f"--aquakv-json: token ids differ from aquakv's in windows {bad[:10]} "
                     f"(tokenizer or BOS mismatch)")
        print(f"token ids: identical to aquakv's in all {n} compared windows", file=sys.stderr)

    rows = []
    common = dict(impl="llama.cpp", model=os.path.basename(args.model), threads=args.threads,
                  machine=platform.processor() or platform.machine(),
                  version=llama_cpp.__version__)
    if not args.no_ppl:
        llms = {t: make_llama(args, t, args.ctx) for t in types}
        nll = {t: [] for t in types}
        kl = {t: [] for t in types}
        same = {t: [] for t in types}
        t_start = time.perf_counter()
        writer = None
        if args.save_logits:
            writer = LogitsFileWriter(args.model, args.file, args.ctx, hashes, args.logits_top)
        for wi, win in enumerate(windows):
            targets = np.asarray(win[1:])
            base = None
            for t in types:
                scores = run_window(llms[t], win)  # float32 (n, V)
                if base is None:
                    base = scores
                # float64 log-probs a block of positions at a time: whole windows of a
                # 262,144-token vocabulary (Gemma 3) at 2048 would need ~4 GiB per array
                for c0 in range(0, len(targets), ROW_BLOCK):
                    c1 = min(len(targets), c0 + ROW_BLOCK)
                    tg = targets[c0:c1]
                    lp = log_softmax64(scores[c0:c1])
                    nll[t].extend((-lp[np.arange(len(tg)), tg]).tolist())
                    if scores is base:
                        if writer is not None:
                            writer.n_vocab = lp.shape[1]
                            writer.add_window(lp, tg)
                    else:
                        base_lp = log_softmax64(base[c0:c1])
                        p = np.exp(base_lp)
                        kl[t].extend(np.maximum((p * (base_lp - lp)).sum(axis=1), 0.0).tolist())
                        same[t].extend((base_lp.argmax(axis=1) == lp.argmax(axis=1)).tolist())
                del scores
            m, _ = stats(nll[types[0]])
            print(f"[{wi + 1}/{n_win}] f16 running PPL {np.exp(m):.4f} "
                  f"({time.perf_counter() - t_start:.1f} s)", file=sys.stderr)
        if writer is not None:
            writer.save(args.save_logits)
            print(f"saved f16 logits for aquakv --kl-base: {args.save_logits}", file=sys.stderr)
        base_ppl = float(np.exp(np.mean(nll["f16"])))
        for t in types:
            m, se = stats(nll[t])
            ppl = float(np.exp(m))
            row = dict(common, kv=t, bits_per_value=TYPES[t][1], ctx=args.ctx, windows=n_win,
                       positions=len(nll[t]), step=min(args.ctx, 512), ppl=ppl, ppl_se=ppl * se,
                       ppl_ratio=ppl / base_ppl, kl_mean=None, kl_p99=None, kl_p999=None,
                       same_top=None, prefill_tps=None, decode_tps=None)
            if t != "f16":
                row.update(kl_mean=float(np.mean(kl[t])),
                           kl_p99=float(np.percentile(kl[t], 99)),
                           kl_p999=float(np.percentile(kl[t], 99.9)),
                           same_top=float(np.mean(same[t])))
            else:
                row.update(kl_mean=0.0, kl_p99=0.0, kl_p999=0.0, same_top=1.0)
            rows.append(row)
        del llms
    for c in [int(x) for x in args.speed_ctx.split(",") if x]:
        for t in types:
            pf, dc = measure_speed(args, t, c, ids)
            rows.append(lc.speed_row(args.model, t, c, args.threads, True, pf, dc))
    for r in rows:
        print(json.dumps(r))
    if args.out:
        with open(args.out, "a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    for r in rows:
        if r["ppl"] is not None:
            print(f"{r['kv']:>5}: PPL = {r['ppl']:.4f} +/- {r['ppl_se']:.4f}  ratio "
                  f"{r['ppl_ratio']:.4f}  KL {r['kl_mean']:.5f} (p99 {r['kl_p99']:.4f})  "
                  f"same-top {r['same_top']:.4f}", file=sys.stderr)


if __name__ == "__main__":
    main()
