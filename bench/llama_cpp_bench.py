#!/usr/bin/env python3
"""llama.cpp (llama-cpp-python) speed measured exactly like `aquakv bench`, same table format.

For each depth d: "pp<P> @ d<d>" times one llama_decode-backed eval of P random tokens after d
tokens are in the KV cache (filled untimed); "tg<N> @ d<d>" times N single-token evals after d
tokens. Tokens are random vocabulary ids (fixed seed). tokens/s: median +- standard deviation
over -r runs. Greedy argmax over the returned logits is included in tg, as in aquakv bench.

  ~/.cache/aquakv/ref-venv/bin/python bench/llama_cpp_bench.py -m MODEL -t 2 -r 3
"""
import argparse
import os
import random
import statistics
import time

import numpy as np
from llama_cpp import Llama


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-m", "--model", default=os.path.expanduser(
        "~/.cache/aquakv/models/SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("-p", "--n-prompt", type=int, default=512)
    ap.add_argument("-n", "--n-gen", type=int, default=128)
    ap.add_argument("-d", "--depths", default="0,512,2048")
    ap.add_argument("-r", "--repetitions", type=int, default=3)
    ap.add_argument("-t", "--threads", type=int, default=os.cpu_count())
    a = ap.parse_args()
    depths = [int(x) for x in a.depths.split(",")]
    ctx = max(depths) + max(a.n_prompt, a.n_gen) + 1
    llm = Llama(model_path=a.model, n_ctx=ctx, n_batch=512, n_ubatch=512, n_threads=a.threads,
                n_threads_batch=a.threads, logits_all=False, verbose=False)
    rng = random.Random(1234)
    fill = [rng.randrange(llm.n_vocab()) for _ in range(max(depths) + a.n_prompt)]
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


if __name__ == "__main__":
    main()
