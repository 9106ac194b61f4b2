#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (fuzz/corpus/<target>/) from the documented
formats, independently of aquakv's C++ writers: docs/ADAPTERS.md (adapter files, versions 1
and 2), docs/SESSIONS.md (session files), include/aquakv/eval/logits_file.h (logits files) and include/aquakv/quant/grid.h
(.f32le grids, prefixed by fuzz_grid's dimension byte). The valid seeds double as goldens:
tests/test_adapters.cpp loads adapters/v2_spec.aqkv and v1_spec.aqkv, tests/test_eval_logits_file.cpp
the logits seeds, tests/test_session.cpp the session seeds. Standard library only; run from the repository root:

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


def f16(x):
    return struct.pack("<e", x)


def session_file(kind, n=5, L=2, C=32):
    """A session file (docs/SESSIONS.md) of n tokens for a model of L layers, 1 KV head x C,
    arch llama, model hash 0x0123456789ABCDEF. kind "fp16": the plain cache's sections with
    key/value row r of layer l, channel i = ((r + 3 l + i) % 7 - 3) / 4 (+ 0.125 for values);
    kind "q8_0": the compressed cache with q8_0 codecs, P = 0, B = 1 (every row coded): block
    scale 0.5 and int8 codes (r + 3 l + i) % 7 - 3 (values: % 5 - 2)."""
    def row(r, l, val):
        if kind == "fp16":
            return b"".join(f16(((r + 3 * l + i) % 7 - 3) / 4 + (0.125 if val else 0)) for i in range(C))
        qs = [((r + 3 * l + i) % 5 - 2) if val else ((r + 3 * l + i) % 7 - 3) for i in range(C)]
        return f16(0.5) + struct.pack(f"<{C}b", *qs)

    sections = []
    if kind == "fp16":
        sections.append(("meta", struct.pack("<q", n)))
        sections.append(("pos", struct.pack(f"<{n}i", *range(n))))
        sections.append(("first", struct.pack(f"<{L}q", *([0] * L))))
        for l in range(L):
            sections.append((f"k.{l}", b"".join(row(r, l, False) for r in range(n))))
            sections.append((f"v.{l}", b"".join(row(r, l, True) for r in range(n))))
        spec, state = "fp16", "fp16"
    else:
        sections.append(("meta", struct.pack("<4q", n, 0, 0, n)))
        sections.append(("pos", struct.pack(f"<{n}i", *range(n))))
        for l in range(L):
            for name in ("sk", "sv", "bk", "bv"):
                sections.append((f"{name}.{l}", b""))
            sections.append((f"ck.{l}", b"".join(row(r, l, False) for r in range(n))))
            sections.append((f"cv.{l}", b"".join(row(r, l, True) for r in range(n))))
        spec = "q8_0,p=0,b=1"
        state = "compressed k=q8_0 v=q8_0 k0=q8_0 v0=q8_0 p=0 b=1 keys=roped"
    head = s("llama") + struct.pack("<qqqQq", L, 1, C, 0x0123456789ABCDEF, 64)
    head += s(spec) + s(state) + struct.pack("<Q", 0)
    head += struct.pack("<q", n) + struct.pack(f"<{n}i", *[100 + t for t in range(n)])
    head += struct.pack("<q", 4) + struct.pack("<4f", 0.5, -1.0, 2.0, 0.25)
    head += struct.pack("<I", len(sections))
    table_len = sum(4 + len(name) + 4 + 32 for name, _ in sections)
    fixed = 8 + 4 + 4 + 8 + 8
    align = lambda x: (x + 63) // 64 * 64
    data_offset = align(fixed + len(head) + table_len + 8)
    off, table, body = data_offset, b"", b""
    for name, data in sections:
        table += s(name) + struct.pack("<IQQQQ", 0, off, len(data), len(data), fnv1a64(data))
        body += b"\0" * (off - data_offset - len(body)) + data
        end = off + len(data)
        off = align(end)
    total = data_offset + len(body)
    out = b"AQKVSESS" + struct.pack("<IIQQ", 1, 0, total, data_offset) + head + table
    out += struct.pack("<Q", fnv1a64(out))
    out += b"\0" * (data_offset - len(out))
    return out + body


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
    # fuzz_session's inputs start with a mode byte (odd: re-sign the checksums first).
    write(f"{root}/session/fp16_spec.aqss", b"\0" + session_file("fp16"))
    write(f"{root}/session/q8_0_spec.aqss", b"\0" + session_file("q8_0"))
    write(f"{root}/session/q8_0_resign.aqss", b"\1" + session_file("q8_0", n=9))
    write(f"{root}/session/empty_fp16.aqss", b"\0" + session_file("fp16", n=0))
    good = session_file("fp16")
    write(f"{root}/session/truncated.aqss", b"\0" + good[: len(good) - 7])
    write(f"{root}/grid/d2n16", grid_input(2, 16))
    write(f"{root}/grid/d1n4", grid_input(1, 4))
    write(f"{root}/grid/d4n256", grid_input(4, 256))
    write(f"{root}/grid/d8n2_short", grid_input(8, 2)[:-3])


if __name__ == "__main__":
    main()
