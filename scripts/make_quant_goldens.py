#!/usr/bin/env python3
"""Golden vectors for aquakv's quant codecs from independent implementations.

- HIGGS: a float64 numpy implementation of the HIGGS row format written from the math in
  include/aquakv/quant/higgs.h (Sylvester Hadamard built by Kronecker doubling, the symmetric
  Paley order-12 matrix from its formula, SplitMix64 sign flips, brute-force nearest point in
  float64) on the built-in grids data/grids/*.f32le. Writes per sub-vector the score margin
  between the best and the second-best point so the C++ test can tell genuine disagreements
  from float32-vs-float64 near-ties.
- q8_0 / q4_0: the `gguf` package's quantize / dequantize (gguf.quants), bit-exact references.

Run: ~/.cache/aquakv/ref-venv/bin/python scripts/make_quant_goldens.py
Writes tests/data/quant_goldens.json.
"""
import json
import os

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
M64 = (1 << 64) - 1


def splitmix64(seed):
    s = seed
    while True:
        s = (s + 0x9E3779B97F4A7C15) & M64
        z = s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        yield z ^ (z >> 31)


def signs(n, seed):
    if seed == 0:
        return np.ones(n)
    g = splitmix64(seed)
    return np.array([-1.0 if (next(g) >> 63) else 1.0 for _ in range(n)])


def sylvester(m):
    h = np.ones((1, 1))
    while h.shape[0] < m:
        h = np.block([[h, h], [h, -h]])
    return h


def paley_sym(q):
    sq = {(a * a) % q for a in range(1, q)}
    chi = lambda a: 0 if a % q == 0 else (1 if a % q in sq else -1)
    p = q + 1
    h = np.zeros((p, p))
    h[0, 0] = -1
    h[0, 1:] = 1
    h[1:, 0] = 1
    for i in range(1, p):
        for j in range(1, p):
            s = (i - 1 + j - 1) % q
            h[i, j] = 1 if s == 0 else -chi(s)
    return h


def hadamard(n):
    for p, q in ((12, 11), (20, 19)):
        if n % p == 0 and (n // p) & (n // p - 1) == 0:
            return np.kron(paley_sym(q), sylvester(n // p))
    return sylvester(n)


def load_grid(d, n):
    path = os.path.join(ROOT, "data", "grids", f"CLVQ{d}-{n}.n{n}xd{d}.f32le")
    return np.fromfile(path, dtype="<f4").astype(np.float64).reshape(n, d)


def pack(codes, width):
    bits = []
    for c in codes:
        bits.extend((int(c) >> b) & 1 for b in range(width))
    out = bytearray((len(bits) + 7) // 8)
    for i, b in enumerate(bits):
        out[i // 8] |= b << (i % 8)
    return bytes(out)


def higgs_case(dim, g, d, n, seed, rows, rng):
    grid = load_grid(d, n)
    gn = (grid * grid).sum(1)
    h = hadamard(g)
    sg = signs(g, seed)
    width = int(np.ceil(np.log2(n)))
    x = (rng.standard_normal((rows, dim)) * rng.uniform(0.1, 3.0, (rows, 1))).astype(np.float32)
    x[0, :g] = 0  # an all-zero group
    out_bytes, all_codes, margins, decoded = [], [], [], []
    zero_code = int(np.argmax(-gn))
    for r in range(rows):
        scales, codes, marg, dec = b"", [], [], []
        for k in range(dim // g):
            xg = x[r, k * g:(k + 1) * g].astype(np.float64)
            s = np.sqrt((xg * xg).sum())
            rms16 = np.float16(np.float32(s / np.sqrt(g)))
            scales += rms16.tobytes()
            if rms16 == 0:
                codes += [zero_code] * (g // d)
                marg += [1e9] * (g // d)
                dec += [0.0] * g
                continue
            y = h @ (sg * xg) / s
            for u in y.reshape(-1, d):
                sc = 2 * grid @ u - gn
                order = np.argsort(-sc, kind="stable")
                codes.append(int(order[0]))
                marg.append(float(sc[order[0]] - sc[order[1]]))
            yhat = grid[codes[-(g // d):]].reshape(-1) * (float(rms16) / np.sqrt(g))
            dec += list(sg * (h @ yhat))
        out_bytes.append((scales + pack(codes, width)).hex())
        all_codes.append(codes)
        margins.append(marg)
        decoded.append(dec)
    spec = f"higgs:{d}x{n}:g{g}" + (f":seed{seed}" if seed else "")
    return {"spec": spec, "dim": dim, "rows": rows, "x": x.reshape(-1).tolist(), "bytes": out_bytes,
            "codes": all_codes, "margins": margins, "decoded": np.array(decoded).reshape(-1).tolist()}


def ggml_case(name, dim, rows, rng):
    from gguf import GGMLQuantizationType, quants
    qt = getattr(GGMLQuantizationType, name.upper())
    x = (rng.standard_normal((rows, dim)) * rng.uniform(0.01, 10.0, (rows, 1))).astype(np.float32)
    x[1, :32] = 0  # an all-zero block
    x[2, 3] = 1e-30
    q = quants.quantize(x, qt)
    deq = quants.dequantize(q, qt)
    return {"spec": name, "dim": dim, "rows": rows, "x": x.reshape(-1).tolist(),
            "bytes": [bytes(row).hex() for row in q], "decoded": deq.reshape(-1).astype(float).tolist()}


def main():
    rng = np.random.default_rng(20251126)
    cases = [
        higgs_case(192, 192, 2, 16, 0, 6, rng),
        higgs_case(192, 64, 2, 16, 7, 6, rng),
        higgs_case(128, 128, 2, 256, 0, 4, rng),
        higgs_case(320, 320, 4, 256, 3, 3, rng),
        higgs_case(192, 192, 2, 64, 0, 3, rng),
    ]
    try:
        cases += [ggml_case("q8_0", 192, 5, rng), ggml_case("q4_0", 192, 5, rng)]
    except ImportError:
        pass
    out = os.path.join(ROOT, "tests", "data", "quant_goldens.json")
    with open(out + ".tmp", "w") as f:
        json.dump({"generator": "scripts/make_quant_goldens.py", "cases": cases}, f)
    os.replace(out + ".tmp", out)
    print(out, len(cases), "cases")


if __name__ == "__main__":
    main()
