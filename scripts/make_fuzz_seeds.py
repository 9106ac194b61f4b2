#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (fuzz/corpus/<target>/) from the documented
formats, independently of aquakv's C++ writers: docs/ADAPTERS.md (adapter files, versions 1
and 2), include/aquakv/eval/logits_file.h (logits files) and include/aquakv/quant/grid.h
(.f32le grids, prefixed by fuzz_grid's dimension byte). The valid seeds double as goldens:
tests/test_adapters.cpp loads adapters/v2_spec.aqkv and v1_spec.aqkv, tests/test_eval_logits_file.cpp
the logits seeds. Standard library only; run from the repository root:

    python3 scripts/make_fuzz_seeds.py
"""
import os
import struct

FNV_PRIME = 0x100000001B3
FNV_BASIS = 14695981039346656037  # FNV-1a 64 offset basis as published
LEGACY_BASIS = 1469598103934665603  # the basis of adapter format version 1 (docs/ADAPTERS.md)
MASK = (1 << 64) - 1


def fnv1a64(data, h=FNV_BASIS):
    for b in data:
        h = ((h ^ b) * FNV_PRIME) & MASK
    return h


def s(text):
    b = text.encode()
    return struct.pack("<I", len(b)) + b


def adapter_file(version, dtype=0, rank=0):
    """A 3-layer model, 2 KV heads x 2 = width 4; layer 1 has a key and a value map, layer 2
    only a value map (flags 2)."""
    C = 4
    fmt = "<f" if dtype == 0 else "<e"

    def floats(n, scale):
        return b"".join(struct.pack(fmt, scale * ((i % 7) - 3) / 8.0) for i in range(n))

    def amap(n_in, n_out, r):
        out = struct.pack("<qqq", n_in, n_out, r)
        if r == 0:
            out += floats(n_in * n_out, 1.0)
        else:
            out += floats(n_in * r, 0.5) + floats(r * n_out, 0.25)
        return out + floats(n_out, 0.125)

    body = s("llama") + struct.pack("<qqqqQ", 3, 2, 2, C, 0x0123456789ABCDEF)
    body += s("higgs:2x16:g4") + s("higgs:2x16:g4") + s("f16")
    body += struct.pack("<qQq", 4, 0, rank) + s('{"seed": "scripts/make_fuzz_seeds.py"}')
    body += struct.pack("<B", 0)
    body += struct.pack("<B", 3) + amap(C, C, rank) + amap(2 * C, C, rank)
    body += struct.pack("<B", 2) + amap(2 * C, C, rank)
    head = b"AQKVADPT" + struct.pack("<II", version, dtype)
    total = len(head) + 8 + len(body) + 8
    data = head + struct.pack("<Q", total) + body
    basis = LEGACY_BASIS if version == 1 else FNV_BASIS
    return data + struct.pack("<Q", fnv1a64(data, basis))


def logits_file(n_vocab=16, ctx=4, n_windows=2, k_max=4, top=3):
    """Rows hold `top` tokens with log-probabilities that sum (with p_rest) to one."""
    import math

    rpw = ctx - 1
    data = b"AQKVLGTS" + struct.pack("<IId", 1, k_max, 1e-4)
    data += struct.pack("<QQQQQ", n_vocab, ctx, rpw, n_windows, 0xFEEDFACE)
    data += s("seed.gguf") + s("fp16") + s("seed.txt")
    for w in range(n_windows):
        data += struct.pack("<Q", fnv1a64(struct.pack("<i", w)))
    for r in range(n_windows * rpw):
        probs = [0.5, 0.25, 0.125][:top]
        data += struct.pack("<ffH", -math.log(probs[0]), 1.0 - sum(probs), len(probs))
        for k, p in enumerate(probs):
            data += struct.pack("<If", (r + 3 * k) % n_vocab, math.log(p))
    return data + struct.pack("<Q", fnv1a64(data))


def grid_input(d, n):
    pts = b"".join(struct.pack("<f", ((i * 7919) % 23 - 11) / 7.0) for i in range(n * d))
    return bytes([d - 1]) + pts


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def main():
    root = "fuzz/corpus"
    write(f"{root}/adapters/v2_spec.aqkv", adapter_file(2))
    write(f"{root}/adapters/v1_spec.aqkv", adapter_file(1))
    write(f"{root}/adapters/v2_f16_rank2.aqkv", adapter_file(2, dtype=1, rank=2))
    good = adapter_file(2)
    write(f"{root}/adapters/truncated.aqkv", good[: len(good) // 2])
    write(f"{root}/logits/small.lgts", logits_file())
    write(f"{root}/logits/one_window_k1.lgts", logits_file(n_vocab=8, ctx=2, n_windows=1, k_max=1, top=1))
    write(f"{root}/grid/d2n16", grid_input(2, 16))
    write(f"{root}/grid/d1n4", grid_input(1, 4))
    write(f"{root}/grid/d4n256", grid_input(4, 256))
    write(f"{root}/grid/d8n2_short", grid_input(8, 2)[:-3])


if __name__ == "__main__":
    main()
