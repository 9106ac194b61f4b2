#!/usr/bin/env python3
"""llama.cpp's own state files beside `aquakv session bench` (docs/SESSIONS.md): for each prompt
length and llama.cpp cache type, a fresh prefill of the first N tokens of a text (aquakv's BOS
policy), then llama_state_save_file (llama.cpp's session file: tokens, logits, KV cells) and
llama_state_load_file into the same context, timed; bytes of the file and bits per KV value
with every byte of the file counted (N tokens x layers x 2 x KV width values).

    ~/.cache/aquakv/ref-venv/bin/python bench/llama_cpp_session.py -f TEXT --tokens 2048,8192 -t 2

Prints Markdown rows with the columns of `aquakv session bench` that apply.
"""
import argparse
import ctypes
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llama_cpp_common as common  # noqa: E402


def kv_values_per_token(llm):
    md = llm.metadata
    arch = md["general.architecture"]
    layers = int(md[f"{arch}.block_count"])
    heads = int(md[f"{arch}.attention.head_count"])
    kv_heads = int(md.get(f"{arch}.attention.head_count_kv", heads))
    head_dim = int(md.get(f"{arch}.attention.key_length", int(md[f"{arch}.embedding_length"]) // heads))
    return layers * 2 * kv_heads * head_dim


def one(model, kv, ids, threads, reps, path):
    lc = common.llama_cpp
    n = len(ids)
    llm = common.make_llama(model, kv, n + 16, threads, common.flash_attn_for(kv, "needed"), logits_all=False)
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(ids)
    prefill = time.perf_counter() - t0
    toks = (lc.llama_token * n)(*ids)
    saves, loads = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        if not lc.llama_state_save_file(llm.ctx, path.encode(), toks, n):
            sys.exit("llama_state_save_file failed")
        saves.append(time.perf_counter() - t0)
        out = (lc.llama_token * (n + 16))()
        got = ctypes.c_size_t(0)
        t0 = time.perf_counter()
        if not lc.llama_state_load_file(llm.ctx, path.encode(), out, n + 16, ctypes.byref(got)):
            sys.exit("llama_state_load_file failed")
        loads.append(time.perf_counter() - t0)
        if got.value != n or list(out[:n]) != list(ids):
            sys.exit("llama.cpp restored other tokens")
    size = os.path.getsize(path)
    os.remove(path)
    values = n * kv_values_per_token(llm)
    del llm
    return size, 8.0 * size / values, statistics.median(saves), statistics.median(loads), prefill


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--model", default=common.default_model_path())
    ap.add_argument("-f", "--file", required=True, help="text whose first N tokens are the prompt")
    ap.add_argument("--tokens", default="2048", help="prompt lengths, comma-separated")
    ap.add_argument("--types", default="f16,q8_0,q4_0", help="llama.cpp cache types")
    ap.add_argument("-t", "--threads", type=int, default=os.cpu_count())
    ap.add_argument("-r", "--repetitions", type=int, default=3)
    ap.add_argument("--dir", default=tempfile.gettempdir())
    a = ap.parse_args()
    common.import_llama_cpp()
    lengths = [int(x) for x in a.tokens.split(",") if x]
    types = common.parse_types(a.types)
    with open(a.file, encoding="utf-8") as f:
        ids, _ = common.tokenize(a.model, f.read(), "auto")
    if len(ids) < max(lengths):
        sys.exit(f"-f {a.file}: {len(ids)} tokens, --tokens asks for {max(lengths)}")
    path = os.path.join(a.dir, f"llama-state-{os.getpid()}.bin")
    print("| llama.cpp kv | tokens | file MiB | bits/value | save ms | restore ms | prefill s | prefill/restore |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for n in lengths:
        for kv in types:
            size, bpv, save, load, prefill = one(a.model, kv, ids[:n], a.threads, a.repetitions, path)
            print(f"| {kv} | {n} | {size / 2**20:.2f} | {bpv:.3f} | {1e3 * save:.1f} | {1e3 * load:.1f} | "
                  f"{prefill:.2f} | {prefill / load:.0f}x |", flush=True)
    print(f"\nllama-cpp-python {common.llama_cpp.__version__}, threads {a.threads}; save/restore: medians of "
          f"{a.repetitions} (llama_state_save_file / llama_state_load_file), prefill: one run")


if __name__ == "__main__":
    main()
