#!/usr/bin/env python3
"""Float64 reference for the perplexity windows: which of aquakv and llama.cpp is closer to the
network's exact function?

Evaluates the first --chunks windows (same tokenization and windows as `aquakv perplexity` and
bench/llama_cpp_eval.py) with the float64 numpy forward pass of scripts/make_logit_goldens.py
(weights dequantized by the `gguf` package; no activation rounding, no 16-bit KV), prints its
perplexity, runs llama.cpp with an f16 cache on the same windows and prints KL(exact || llama.cpp)
and the PPL ratio, and writes the exact logits in aquakv's base-logits format so that

    aquakv perplexity ... --kl-base exact.logits

gives KL(exact || aquakv) and aquakv's PPL ratio to the exact one on the same positions.

Usage (reference venv):
  ~/.cache/aquakv/ref-venv/bin/python bench/exact_reference.py -m MODEL -f TEXT -c 512 \
      --chunks 2 -t 2 --save-logits exact.logits

With --no-llama the text is tokenized by `aquakv tokenize` (build/aquakv or $AQUAKV; BOS as the
model's add_bos_token says) and llama.cpp is not run: only the exact PPL and logits file.
The architectures are those of scripts/make_logit_goldens.py Exact (llama, gemma3).
"""
import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "scripts"))
import llama_cpp_eval as L  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("-f", "--file", required=True)
    ap.add_argument("-c", "--ctx", type=int, required=True)
    ap.add_argument("--chunks", type=int, default=1)
    ap.add_argument("-t", "--threads", type=int, default=os.cpu_count())
    ap.add_argument("--bos", choices=["auto", "on", "off"], default="auto")
    ap.add_argument("--logits-top", type=int, default=1024)
    ap.add_argument("--save-logits", required=True)
    ap.add_argument("--no-llama", action="store_true",
                    help="tokenize with aquakv and skip llama.cpp (no llama-cpp-python needed)")
    args = ap.parse_args()
    if args.no_llama:
        import json
        import subprocess
        binary = os.environ.get("AQUAKV", os.path.join(os.path.dirname(HERE), "build", "aquakv"))
        cmd = [binary, "tokenize", "-m", args.model, "-f", args.file, "--ids", "--no-parse-special"]
        if args.bos == "off":
            cmd.append("--no-bos")
        ids = json.loads(subprocess.check_output(cmd))
    else:
        L.import_llama_cpp()
        with open(args.file, encoding="utf-8") as f:
            ids, _ = L.tokenize(args.model, f.read(), args.bos)
    from make_logit_goldens import Exact  # needs gguf (reference venv)

    n_win = min(args.chunks, len(ids) // args.ctx)
    windows = [ids[w * args.ctx:(w + 1) * args.ctx] for w in range(n_win)]
    hashes = [L.fnv1a64_tokens(w) for w in windows]
    writer = L.LogitsFileWriter(args.model, args.file, args.ctx, hashes, args.logits_top,
                                label="exact float64")
    exact = Exact(args.model)
    llm = None if args.no_llama else L.make_llama(args, "f16", args.ctx)
    nll_exact, nll_llama, kl, same = [], [], [], []
    t0 = time.perf_counter()
    for wi, win in enumerate(windows):
        targets = np.asarray(win[1:])
        lp_e = L.log_softmax64(exact.logits(np.asarray(win[:-1])))
        writer.n_vocab = lp_e.shape[1]
        writer.add_window(lp_e, targets)
        rows = np.arange(len(targets))
        nll_exact.extend((-lp_e[rows, targets]).tolist())
        print(f"[{wi + 1}/{n_win}] {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        if llm is None:
            continue
        lp_l = L.log_softmax64(L.run_window(llm, win))
        nll_llama.extend((-lp_l[rows, targets]).tolist())
        kl.extend(np.maximum((np.exp(lp_e) * (lp_e - lp_l)).sum(axis=1), 0).tolist())
        same.extend((lp_e.argmax(1) == lp_l.argmax(1)).tolist())
    writer.save(args.save_logits)
    if llm is None:
        print(f"windows {n_win} x {args.ctx}, {len(nll_exact)} positions")
        print(f"exact float64 PPL    : {np.exp(np.mean(nll_exact)):.4f}")
        print(f"saved exact logits   : {args.save_logits}")
        return
    d = np.asarray(nll_llama) - np.asarray(nll_exact)
    ratio = float(np.exp(d.mean()))
    print(f"windows {n_win} x {args.ctx}, {len(nll_exact)} positions")
    print(f"exact float64 PPL    : {np.exp(np.mean(nll_exact)):.4f}")
    print(f"llama.cpp f16 PPL    : {np.exp(np.mean(nll_llama)):.4f}")
    print(f"llama.cpp / exact    : {ratio:.5f} +/- {ratio * d.std(ddof=1) / np.sqrt(len(d)):.5f}")
    print(f"KL(exact || llama)   : {np.mean(kl):.6f} (p99 {np.percentile(kl, 99):.5f}), "
          f"same top {100 * np.mean(same):.2f}%")
    print(f"saved exact logits   : {args.save_logits}")


if __name__ == "__main__":
    main()
