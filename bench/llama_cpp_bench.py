#!/usr/bin/env python3
"""llama.cpp (llama-cpp-python) speed, in two forms.

1. Report rows (--rows FILE and/or --report-config CONFIG): llama.cpp's speed measured with
   exactly the protocol of `aquakv report`'s speed rows (eval::measure_speed, see
   bench/llama_cpp_common.py), written as `aquakv report` JSON lines (impl "llama.cpp", kv
   f16 / q8_0 / q4_0, bits per value as llama.cpp stores them: 16, 8.5, 4.5) for
   `aquakv report --extra FILE`. For each context CTX and cache type: prefill tokens/s of a
   CTX-token prompt fed 512 at a time to an empty cache, and decode tokens/s of
   --decode-tokens single-token steps ending at CTX. The prompt is the text's tokens (-f, with
   aquakv's BOS policy) or, without a text, "The quick brown fox jumps over the lazy dog. ",
   repeated to CTX tokens -- the tokens `aquakv report` times. Flash attention: --flash-attn
   needed (default: on for q8_0 and q4_0, whose quantized V cache needs it, off for f16), on
   or off; each row records it ("flash_attn").

   --report-config takes the settings from an `aquakv report` config (model, text, bos, kv,
   speed_ctx, decode_tokens, threads; file names relative to the config's folder) and writes
   the rows to its first extra_rows file, so both tools run the same matrix:

     ~/.cache/aquakv/ref-venv/bin/python bench/llama_cpp_bench.py --report-config bench/report_speed.json
     build/aquakv report --config bench/report_speed.json

   Flags given on the command line win over the config.

2. Table (default): "pp<P> @ d<d>" times one eval of P random tokens after d tokens are in the
   KV cache (filled untimed); "tg<N> @ d<d>" times N single-token evals after d tokens, greedy
   argmax included, as `aquakv bench` does. tokens/s: median +- standard deviation over -r runs.

     ~/.cache/aquakv/ref-venv/bin/python bench/llama_cpp_bench.py -m MODEL -t 2 -r 3
"""
import argparse
import json
import os
import random
import statistics
import sys
import time

import numpy as np

import llama_cpp_common as lc


def bench_table(a):
    """The llama-bench style table (mode 2)."""
    Llama = lc.Llama
    depths = [int(x) for x in a.depths.split(",")]
    ctx = max(depths) + max(a.n_prompt, a.n_gen) + 1
    llm = Llama(model_path=a.model, n_ctx=ctx, n_batch=512, n_ubatch=512, n_threads=a.threads,
                n_threads_batch=a.threads, logits_all=False, verbose=False)
    rng = random.Random(1234)
    fill = [rng.randrange(llm.n_vocab()) for _ in range(max(depths) + max(a.n_prompt, 1))]
    name = llm.metadata.get("general.name", os.path.basename(a.model))
    size = os.path.getsize(a.model) / 2**20
    print("| model | size | threads | kv | test | t/s |\n|---|---:|---:|---|---|---:|")
    for d in depths:
        for pp in (True, False):
            n = a.n_prompt if pp else a.n_gen
            if n == 0:
                continue
            tps = []
            for _ in range(a.repetitions):
                llm.reset()
                llm._ctx.kv_cache_clear()
                if d:
                    llm.eval(fill[:d])
                t0 = time.perf_counter()
                if pp:
                    llm.eval(fill[d:d + n])
                else:
                    nxt = fill[d]
                    for _ in range(n):
                        llm.eval([nxt])
                        last = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))
                        nxt = int(np.argmax(last))
                tps.append(n / (time.perf_counter() - t0))
            sd = statistics.stdev(tps) if len(tps) > 1 else 0.0
            test = f"{'pp' if pp else 'tg'}{n} @ d{d}"
            print(f"| {name} (llama.cpp) | {size:.2f} MiB | {a.threads} | f16 | {test} | "
                  f"{statistics.median(tps):.2f} ± {sd:.2f} |", flush=True)


def apply_report_config(a):
    """Fills the unset report-row settings from an `aquakv report` config file."""
    path = a.report_config
    try:
        with open(path) as f:
            cfg = json.load(f)
    except (OSError, ValueError) as e:
        sys.exit(f"--report-config {path}: {e}")
    if not isinstance(cfg, dict):
        sys.exit(f"--report-config {path}: expected a JSON object")
    base = os.path.dirname(path)

    def rel(key):
        v = cfg[key]
        if not isinstance(v, str):
            sys.exit(f"--report-config {path}: field {key} must be a file name, got {v!r}")
        return os.path.normpath(v if os.path.isabs(v) else os.path.join(base, v))

    def ints(key):
        v = cfg[key]
        if not isinstance(v, list) or not all(isinstance(x, int) and x > 0 for x in v):
            sys.exit(f"--report-config {path}: field {key} must be a list of positive integers")
        return v

    if a.model is None and "model" in cfg:
        a.model = rel("model")
    if a.file is None and "text" in cfg:
        a.file = rel("text")
    if a.bos is None and "bos" in cfg:
        a.bos = cfg["bos"]
    if a.speed_ctx is None and "speed_ctx" in cfg:
        a.speed_ctx = ",".join(str(c) for c in ints("speed_ctx"))
    if a.decode_tokens is None and "decode_tokens" in cfg:
        a.decode_tokens = cfg["decode_tokens"]
    if a.threads is None and "threads" in cfg:
        a.threads = cfg["threads"] or os.cpu_count()  # aquakv: 0 = all cores
    if a.types is None and "kv" in cfg:
        kvs = cfg["kv"]
        if not isinstance(kvs, list):
            sys.exit(f"--report-config {path}: field kv must be a list")
        skipped = [k for k in kvs if k not in lc.AQUAKV_TO_LLAMA]
        if skipped:
            print(f"llama.cpp has no cache like {', '.join(map(str, skipped))}: skipped",
                  file=sys.stderr)
        a.types = ",".join(lc.AQUAKV_TO_LLAMA[k] for k in kvs if k in lc.AQUAKV_TO_LLAMA)
        if not a.types:
            sys.exit(f"--report-config {path}: none of kv {kvs} is a llama.cpp cache type")
    if a.rows is None:
        extra = cfg.get("extra_rows")
        if not isinstance(extra, list) or not extra or not isinstance(extra[0], str):
            sys.exit(f"--report-config {path}: give --rows or an extra_rows file list")
        a.rows = os.path.normpath(extra[0] if os.path.isabs(extra[0]) else os.path.join(base, extra[0]))


def report_rows(a):
    """Mode 1: the speed rows of `aquakv report`, measured on llama.cpp."""
    types = lc.parse_types(a.types or "f16,q8_0,q4_0")
    ctxs = [int(x) for x in (a.speed_ctx or "").split(",") if x]
    if not ctxs or min(ctxs) < 2:
        sys.exit("--speed-ctx: give one or more contexts of at least 2 tokens, e.g. 512,2048")
    n_decode = 32 if a.decode_tokens is None else a.decode_tokens
    bos = a.bos or "auto"
    if bos not in ("auto", "on", "off"):
        sys.exit(f"--bos: expected auto, on or off, got {bos!r}")
    if a.file:
        with open(a.file, encoding="utf-8") as f:
            ids, _ = lc.tokenize(a.model, f.read(), bos)
        source = a.file
    else:
        ids, _ = lc.tokenize(a.model, lc.SPEED_SENTENCE, "off")  # aquakv: encode(s, false, false)
        source = repr(lc.SPEED_SENTENCE)
    print(f"llama.cpp {lc.llama_cpp.__version__}: prompt from {source} ({len(ids)} tokens), "
          f"contexts {ctxs}, {n_decode} decode tokens, {a.threads} threads, types {types}",
          file=sys.stderr)
    rows = []
    for ctx in ctxs:
        prompt = lc.speed_prompt(ids, ctx)
        for kv in types:
            fa = lc.flash_attn_for(kv, a.flash_attn)
            pf, dc = lc.measure_speed(a.model, kv, ctx, prompt, n_decode, a.threads, fa)
            print(f"  {kv:>5} ctx {ctx}: prefill {pf:.1f} tok/s, decode {dc:.2f} tok/s "
                  f"(flash attention {'on' if fa else 'off'})", file=sys.stderr)
            rows.append(lc.speed_row(a.model, kv, ctx, a.threads, fa, pf, dc))
    for r in rows:
        print(json.dumps(r))
    if a.rows:
        lc.write_rows(a.rows, rows)
        print(f"wrote {len(rows)} rows to {a.rows}", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-m", "--model", default=None, help="GGUF model (default: aquakv's)")
    ap.add_argument("-t", "--threads", type=int, default=None, help="threads (default all cores)")
    rows = ap.add_argument_group("report rows (mode 1)")
    rows.add_argument("--report-config", help="settings from an `aquakv report` config")
    rows.add_argument("--rows", help="write the rows (JSON lines) to this file")
    rows.add_argument("--speed-ctx", help="contexts, e.g. 512,1024,2048,4096")
    rows.add_argument("--decode-tokens", type=int, help="decode steps timed (default 32)")
    rows.add_argument("--types", help="cache types (default f16,q8_0,q4_0)")
    rows.add_argument("-f", "--file", help="prompt text (default: the sentence aquakv uses)")
    rows.add_argument("--bos", choices=["auto", "on", "off"], help="BOS before the text")
    rows.add_argument("--flash-attn", choices=["needed", "on", "off"], default="needed")
    table = ap.add_argument_group("table (mode 2)")
    table.add_argument("-p", "--n-prompt", type=int, default=512)
    table.add_argument("-n", "--n-gen", type=int, default=128)
    table.add_argument("-d", "--depths", default="0,512,2048")
    table.add_argument("-r", "--repetitions", type=int, default=3)
    a = ap.parse_args()
    lc.import_llama_cpp()
    mode_rows = a.report_config or a.rows or a.speed_ctx
    if mode_rows and a.report_config:
        apply_report_config(a)
        a.report_config = None
    if a.model is None:
        a.model = lc.default_model_path()
    if a.threads is None:
        a.threads = os.cpu_count()
    if mode_rows:
        report_rows(a)
    else:
        bench_table(a)


if __name__ == "__main__":
    main()
