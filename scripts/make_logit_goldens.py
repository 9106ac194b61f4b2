#!/usr/bin/env python3
"""Golden logits for tests/test_forward.cpp from two independent references of the same GGUF:

1. llama.cpp (llama-cpp-python): its logits for every prompt position (top-k in the JSON, full
   rows of a few positions in logits_golden.f16, little-endian float16) and its greedy
   continuation. llama.cpp quantizes activations to 8 bits before each quantized matmul and
   rounds attention operands to f16, so it is itself a few tenths of a logit away from exact.
2. "exact": a float64 numpy evaluation of the same network on weights dequantized by the `gguf`
   package (llama architecture; RoPE on adjacent pairs, as llama.cpp's converter lays out Q/K).
   Its argmax and top-2 margin are stored for every position, and for the full-row positions
   its logits at every EXACT_STRIDE-th vocabulary id (logits_golden_exact.f32, little-endian).

For a gemma3 model (`--gemma`) the files go to tests/data/gemma3/ with Gemma's chat markers, the
prompts start with BOS (the model's add_bos_token), a fourth prompt of about 800 tokens crosses
the 512-token sliding window, and both kinds of rows are stored at every 64th vocabulary id
(LLAMA_STRIDE and EXACT_STRIDE in the JSON; the full rows of 262,144 logits would be 0.5 MB each).

Run in the reference venv (scripts/ref_venv.sh):
  ~/.cache/aquakv/ref-venv/bin/python scripts/make_logit_goldens.py [MODEL.gguf]
  ~/.cache/aquakv/ref-venv/bin/python scripts/make_logit_goldens.py --gemma GEMMA3.gguf
  ... --gemma --exact-only GEMMA3.gguf   (no llama.cpp: float64 rows only, ids from aquakv)
"""
import hashlib
import json
import os
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize

ARGS = sys.argv[1:]
EXACT_ONLY = "--exact-only" in ARGS
GEMMA = "--gemma" in ARGS
ARGS = [a for a in ARGS if a not in ("--gemma", "--exact-only")]
assert GEMMA or not EXACT_ONLY, "--exact-only is for --gemma"
MODEL = ARGS[0] if ARGS else os.path.expanduser(
    "~/.cache/aquakv/models/SmolLM2-135M-Instruct.Q4_1.gguf")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(ROOT, "tests", "data")
if GEMMA:
    OUT_DIR = os.path.join(OUT_DIR, "gemma3")
TOP_K = 8
GREEDY_TOKENS = 16
EXACT_STRIDE = 64 if GEMMA else 12
LLAMA_STRIDE = 64 if GEMMA else 1

TEXTS = [
    "The capital of France is",
    "<|im_start|>user\nWrite a short poem about the sea.<|im_end|>\n<|im_start|>assistant\n",
    ("In 1905, Albert Einstein published four papers that changed physics: the photoelectric "
     "effect, Brownian motion, special relativity, and the equivalence of mass and energy. "
     "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n"
     "Numbers like 3.14159, 2718 and 1,000,000 appear too; so do words in other scripts: "
     "Здравствуй мир, こんにちは世界, and an emoji 🙂. " * 3),
]
if GEMMA:
    TEXTS[1] = "<start_of_turn>user\nWrite a short poem about the sea.<end_of_turn>\n<start_of_turn>model\n"
    TEXTS.append(open(os.path.join(os.environ.get("AQUAKV_SHARED_DIR", "/work/shared"),
                                   "data/wikitext-2-raw-test.txt"), encoding="utf-8").read()[:3600])


class Exact:
    """float64 reference forward pass of a llama- or gemma3-architecture GGUF.

    gemma3 as llama.cpp reads it: embeddings times sqrt(d_model); per-head RMSNorm of q and k
    (attn_q_norm / attn_k_norm) before RoPE; NeoX RoPE (pairs (i, i + hd/2)) with base 10000 on
    sliding-window layers and the file's base on every 6th layer (l % 6 == 5), which attends to
    all positions while the others see the last `sliding_window` ones; the attention and FFN
    outputs RMS-normalized (post_attention_norm / post_ffw_norm) before the residual add;
    GeGLU with the tanh form of gelu; scores scaled by 1/sqrt(head_dim); an optional final
    soft-cap. Norm weights are used as stored (the converter has added Gemma's +1)."""

    def __init__(self, path):
        r = GGUFReader(path)
        self.t = {t.name: t for t in r.tensors}
        self.arch = bytes(r.fields["general.architecture"].parts[-1]).decode()
        assert self.arch in ("llama", "gemma3"), self.arch

        def field(k, default=None):
            f = r.fields.get(self.arch + "." + k)
            return default if f is None else f.parts[f.data[0]][0]

        self.gemma = self.arch == "gemma3"
        self.n_layers = int(field("block_count"))
        self.n_heads = int(field("attention.head_count"))
        self.n_kv = int(field("attention.head_count_kv", self.n_heads))
        self.d = int(field("embedding_length"))
        self.hd = int(field("attention.key_length", self.d // self.n_heads))
        self.eps = float(field("attention.layer_norm_rms_epsilon"))
        self.base = float(field("rope.freq_base", 10000.0))
        self.window = int(field("attention.sliding_window", 0)) if self.gemma else 0
        self.softcap = float(field("final_logit_softcapping", 0.0)) if self.gemma else 0.0
        self.cache = {}

    def w(self, name):
        if name not in self.cache:
            t = self.t[name]
            self.cache[name] = dequantize(t.data, t.tensor_type).astype(np.float64)
        return self.cache[name]

    def rms(self, x, name):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * self.w(name)

    def is_swa(self, l):
        return self.window > 0 and l % 6 != 5

    def rope_fn(self, n, base):
        hd = self.hd
        theta = np.arange(n)[:, None] * base ** (-2.0 * np.arange(hd // 2) / hd)
        cos, sin = np.cos(theta)[:, None, :], np.sin(theta)[:, None, :]

        def rope(a):  # (n, heads, hd)
            if self.gemma:  # NeoX: pairs (i, i + hd/2)
                e, o = a[..., : hd // 2], a[..., hd // 2:]
                return np.concatenate([e * cos - o * sin, e * sin + o * cos], axis=-1)
            e, o = a[..., 0::2], a[..., 1::2]  # pairs (2i, 2i+1)
            out = np.empty_like(a)
            out[..., 0::2] = e * cos - o * sin
            out[..., 1::2] = e * sin + o * cos
            return out
        return rope

    def logits(self, ids):
        n, hd, grp = len(ids), self.hd, self.n_heads // self.n_kv
        x = self.w("token_embd.weight")[ids].copy()
        if self.gemma:
            x *= np.sqrt(self.d)
        rope_global = self.rope_fn(n, self.base)
        rope_local = self.rope_fn(n, 10000.0)
        causal = np.triu(np.full((n, n), -np.inf), 1)
        local = causal.copy()
        if self.window > 0:  # query t sees keys u with t - u < window
            local[np.tril(np.ones((n, n), dtype=bool), -self.window)] = -np.inf
        for l in range(self.n_layers):
            p = f"blk.{l}."
            rope = rope_local if self.is_swa(l) else rope_global
            mask = local if self.is_swa(l) else causal
            xn = self.rms(x, p + "attn_norm.weight")
            q = (xn @ self.w(p + "attn_q.weight").T).reshape(n, self.n_heads, hd)
            k = (xn @ self.w(p + "attn_k.weight").T).reshape(n, self.n_kv, hd)
            v = (xn @ self.w(p + "attn_v.weight").T).reshape(n, self.n_kv, hd)
            if self.gemma:
                q = self.rms(q, p + "attn_q_norm.weight")
                k = self.rms(k, p + "attn_k_norm.weight")
            q, k = rope(q), rope(k)
            o = np.empty((n, self.n_heads, hd))
            for h in range(self.n_heads):
                s = q[:, h] @ k[:, h // grp].T / np.sqrt(hd) + mask
                s = np.exp(s - s.max(1, keepdims=True))
                o[:, h] = (s / s.sum(1, keepdims=True)) @ v[:, h // grp]
            a = o.reshape(n, -1) @ self.w(p + "attn_output.weight").T
            x = x + (self.rms(a, p + "post_attention_norm.weight") if self.gemma else a)
            xn = self.rms(x, p + "ffn_norm.weight")
            g = xn @ self.w(p + "ffn_gate.weight").T
            u = xn @ self.w(p + "ffn_up.weight").T
            if self.gemma:
                act = 0.5 * g * (1 + np.tanh(np.sqrt(2 / np.pi) * (g + 0.044715 * g ** 3)))
            else:
                act = g / (1 + np.exp(-g))
            f = (act * u) @ self.w(p + "ffn_down.weight").T
            x = x + (self.rms(f, p + "post_ffw_norm.weight") if self.gemma else f)
        out = self.w("output.weight") if "output.weight" in self.t else self.w("token_embd.weight")
        lo = self.rms(x, "output_norm.weight") @ out.T
        if self.softcap > 0:
            lo = self.softcap * np.tanh(lo / self.softcap)
        return lo


def aquakv_ids(text):
    """Token ids from aquakv's tokenizer (build/aquakv, or $AQUAKV): only for --exact-only."""
    import subprocess
    binary = os.environ.get("AQUAKV", os.path.join(ROOT, "build", "aquakv"))
    out = subprocess.check_output([binary, "tokenize", "-m", MODEL, "-p", text, "--ids"])
    return json.loads(out)


def main():
    # --exact-only (gemma3): no llama.cpp; the prompts' ids come from aquakv's tokenizer (the
    # forward pass is checked for given ids, so their origin does not matter there) and only the
    # float64 rows are written. Rerun without it once llama-cpp-python is available.
    llm = None
    if not EXACT_ONLY:
        from llama_cpp import Llama  # here, so that Exact can be imported without it
        llm = Llama(model_path=MODEL, n_ctx=2048 if GEMMA else 1024, n_threads=2, n_batch=512,
                    logits_all=True, verbose=False, seed=0)
    exact = Exact(MODEL)
    prompts, rows, exact_rows = [], [], []
    for text in TEXTS:
        if llm is None:
            ids = aquakv_ids(text)
        else:
            ids = llm.tokenize(text.encode("utf-8"), add_bos=GEMMA, special=True)
        n = len(ids)
        full_pos = sorted(set([0, 1, n // 2, n - 1]))
        prompt = {"text": text, "ids": [int(i) for i in ids], "full_positions": full_pos}
        if llm is not None:
            llm.reset()
            llm.eval(ids)
            scores = np.array(llm.scores[: len(ids)], dtype=np.float32)
            top = []
            for p in range(n):
                order = np.argsort(-scores[p], kind="stable")[:TOP_K]
                top.append({"ids": [int(i) for i in order],
                            "logits": [float(scores[p][i]) for i in order]})
            for p in full_pos:
                rows.append(scores[p, ::LLAMA_STRIDE].astype(np.float16))
            # Greedy continuation (llama.cpp decodes one token at a time after the prompt).
            greedy = []
            for _ in range(GREEDY_TOKENS):
                nxt = int(np.argmax(np.array(llm.scores[llm.n_tokens - 1])))
                greedy.append(nxt)
                llm.eval([nxt])
            prompt.update({"top": top, "greedy": greedy})
        ex = exact.logits(ids)
        ex_sorted = np.sort(ex, axis=1)
        prompt["exact_top1"] = [int(i) for i in ex.argmax(1)]
        prompt["exact_margin"] = [float(m) for m in ex_sorted[:, -1] - ex_sorted[:, -2]]
        for p in full_pos:
            exact_rows.append(ex[p, ::EXACT_STRIDE].astype(np.float32))
        prompts.append(prompt)
        print(f"prompt {len(prompts)}: {n} tokens", file=sys.stderr)
    with open(MODEL, "rb") as f:
        model_sha = hashlib.sha256(f.read()).hexdigest()
    meta = {"model": os.path.basename(MODEL), "model_sha256": model_sha,
            "reference": ("exact float64 only; ids from aquakv tokenize" if llm is None else
                          "llama-cpp-python " + __import__("llama_cpp").__version__),
            "n_vocab": int(exact.t["token_embd.weight"].shape[1]), "top_k": TOP_K,
            "exact_stride": EXACT_STRIDE,
            **({"llama_stride": LLAMA_STRIDE} if GEMMA else {}),
            "prompts": prompts}
    os.makedirs(OUT_DIR, exist_ok=True)
    files = [("logits_golden_exact.f32", np.stack(exact_rows).astype("<f4").tobytes(), "wb"),
             ("logits_golden.json", json.dumps(meta, indent=1), "w")]
    if llm is not None:
        files.append(("logits_golden.f16", np.stack(rows).astype("<f2").tobytes(), "wb"))
    for name, data, mode in files:
        path = os.path.join(OUT_DIR, name)
        with open(path + ".tmp", mode) as f:
            f.write(data)
        os.replace(path + ".tmp", path)
    print(f"wrote {len(prompts)} prompts, {len(rows)} llama.cpp rows, {len(exact_rows)} exact rows")


if __name__ == "__main__":
    main()
