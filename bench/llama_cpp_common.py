"""llama.cpp (llama-cpp-python) pieces shared by bench/llama_cpp_eval.py and
bench/llama_cpp_bench.py: cache types, tokenization with aquakv's BOS policy, context
construction, and the speed protocol of `aquakv report` (eval::measure_speed) with its
result rows in the `aquakv report` JSON-lines format (include/aquakv/eval/report.h).

Needs llama-cpp-python only when a function that runs llama.cpp is called, so the row helpers
can be imported (and tested) without it.
"""
import json
import os
import platform
import sys
import time

# llama.cpp cache types: ggml type id (GGUF spec numbering) and storage bits per value (block
# size 32: q8_0 stores 32 int8 + one f16 scale = 34 bytes, q4_0 32 nibbles + one f16 scale = 18).
TYPES = {
    "f16": (1, 16.0),
    "q8_0": (8, 34 * 8 / 32),
    "q4_0": (2, 18 * 8 / 32),
}
# aquakv --kv specs that are the same storage format as a llama.cpp cache type.
AQUAKV_TO_LLAMA = {"fp16": "f16", "q8_0": "q8_0", "q4_0": "q4_0"}

# The prompt `aquakv report` times when it is given no text (tools/aquakv/cmd_report.cpp).
SPEED_SENTENCE = "The quick brown fox jumps over the lazy dog. "
# Tokens per forward call of eval::measure_speed's prefill (its `batch` default).
SPEED_BATCH = 512

ROW_FIELDS = ("impl", "model", "kv", "bits_per_value", "ctx", "threads", "windows", "positions",
              "step", "ppl", "ppl_se", "ppl_ratio", "kl_mean", "kl_p99", "kl_p999", "same_top",
              "prefill_tps", "decode_tps")


def import_llama_cpp():
    """Imports llama_cpp into this module's globals; exits with a one-line hint if missing."""
    global llama_cpp, Llama
    try:
        import llama_cpp
        from llama_cpp import Llama
    except ImportError:
        sys.exit(f"{os.path.basename(sys.argv[0])}: llama-cpp-python is missing; run "
                 "scripts/ref_venv.sh and use ~/.cache/aquakv/ref-venv/bin/python")
    return llama_cpp


def default_model_path():
    """tools/aquakv/main.cpp default_model_path(): $AQUAKV_MODEL, else the cached SmolLM2."""
    m = os.environ.get("AQUAKV_MODEL")
    if m:
        return m
    cache = os.environ.get("AQUAKV_CACHE")
    if not cache:
        xdg = os.environ.get("XDG_CACHE_HOME")
        cache = os.path.join(xdg, "aquakv") if xdg else os.path.join(
            os.environ.get("HOME", "."), ".cache", "aquakv")
    return os.path.join(cache, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")


def parse_types(spec, what="--types"):
    types = [t for t in spec.split(",") if t]
    for t in types:
        if t not in TYPES:
            sys.exit(f"{what}: unknown cache type {t!r} (known: {', '.join(TYPES)})")
    if not types:
        sys.exit(f"{what}: no cache type given")
    return types


def flash_attn_for(kv, policy):
    """policy 'on' / 'off', or 'needed': on exactly for the quantized types (llama.cpp can only
    store a quantized V cache with flash attention)."""
    if policy == "needed":
        return kv != "f16"
    return policy == "on"


def tokenize(model_path, text, bos):
    """Token ids of `text` as aquakv's tokenize_for_eval makes them (no special-token parsing;
    BOS at the start only when bos == 'on', or 'auto' and the model's add_bos_token says so).
    Returns (ids, model_adds_bos)."""
    vocab = Llama(model_path=model_path, vocab_only=True, verbose=False)
    ids = vocab.tokenize(text.encode("utf-8"), add_bos=False, special=False)
    model_adds_bos = len(vocab.tokenize(b"", add_bos=True, special=False)) > 0
    if bos == "on" or (bos == "auto" and model_adds_bos):
        ids = [vocab.token_bos()] + ids
    return ids, model_adds_bos


def make_llama(model, kv, n_ctx, threads, flash_attn, logits_all=True):
    type_id, _ = TYPES[kv]
    return Llama(model_path=model, n_ctx=n_ctx, n_batch=min(n_ctx, SPEED_BATCH),
                 n_ubatch=min(n_ctx, SPEED_BATCH), n_threads=threads, n_threads_batch=threads,
                 logits_all=logits_all, flash_attn=flash_attn, type_k=type_id, type_v=type_id,
                 seed=0, verbose=False)


def speed_prompt(ids, ctx):
    """The first ctx ids of `ids` repeated end to end: what `aquakv report` times (it doubles
    the token list until it holds ctx ids and feeds the first ctx)."""
    if not ids:
        sys.exit("speed: the prompt has no tokens")
    return (list(ids) * (ctx // len(ids) + 1))[:ctx]


def measure_speed(model, kv, ctx, prompt, n_decode, threads, flash_attn):
    """eval::measure_speed (src/eval/engine_runner.cpp) on llama.cpp: prefill tokens/s of a
    ctx-token prompt fed SPEED_BATCH at a time to an empty cache of ctx tokens (logits of each
    call's last token only), then decode tokens/s of n_decode single-token steps after the
    first ctx - n_decode prompt tokens (prefilled untimed into an emptied cache), ending at ctx.
    Returns (prefill_tps, decode_tps)."""
    if len(prompt) < ctx:
        sys.exit(f"speed: need {ctx} tokens, have {len(prompt)}")
    n_decode = max(1, min(n_decode, ctx - 1))
    llm = make_llama(model, kv, ctx, threads, flash_attn, logits_all=False)
    llm.reset()  # Llama.eval first drops every cached position >= n_tokens: an empty cache
    t0 = time.perf_counter()
    llm.eval(prompt[:ctx])
    prefill = ctx / (time.perf_counter() - t0)
    llm.reset()
    llm.eval(prompt[: ctx - n_decode])
    t0 = time.perf_counter()
    for t in prompt[ctx - n_decode: ctx]:
        llm.eval([t])
    decode = n_decode / (time.perf_counter() - t0)
    del llm
    return prefill, decode


def make_row(**fields):
    """A `aquakv report` row: every ReportRow field (absent ones null) plus any extra fields
    (kept for the record; aquakv's reader ignores them)."""
    row = {k: None for k in ROW_FIELDS}
    row["impl"] = "llama.cpp"
    row.update(fields)
    for k in ("kv", "bits_per_value", "ctx"):
        if row[k] is None:
            raise ValueError(f"report row: field {k} is required")
    return row


def common_fields(model, threads):
    return dict(impl="llama.cpp", model=os.path.basename(model), threads=threads,
                machine=platform.processor() or platform.machine(),
                version=llama_cpp.__version__)


def speed_row(model, kv, ctx, threads, flash_attn, prefill, decode):
    return make_row(**common_fields(model, threads), kv=kv, bits_per_value=TYPES[kv][1],
                    ctx=ctx, step=SPEED_BATCH, flash_attn=flash_attn, prefill_tps=prefill,
                    decode_tps=decode)


def write_rows(path, rows, append=False):
    """JSON lines; a new file is written atomically (temp file + rename)."""
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if append:
        with open(path, "a") as f:
            f.write(text)
        return
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
