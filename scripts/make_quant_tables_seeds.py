#!/usr/bin/env python3
"""Writes the seed corpus fuzz/corpus/quant_tables: small quantizer-tables files (the layout of
docs/ADAPTERS.md "Quantizer tables", written here independently of the C++ writer), a KVQuant and
a CQ one, plus damaged copies (truncated, flipped byte, bad method). Run from the repository root."""
import hashlib
import os
import struct


def fnv1a64(b: bytes) -> int:
    h = 0xcbf29ce484222325
    for x in b:
        h = ((h ^ x) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def s(x: str) -> bytes:
    e = x.encode()
    return struct.pack("<I", len(e)) + e


def tables(method: str, bits: int, outliers: int, group: int, heads=1, hd=32, layers=2) -> bytes:
    C = heads * hd
    K = 1 << bits
    body = s(method) + s("llama") + struct.pack("<qqqqQ", layers, heads, hd, C, 0x1234)
    body += struct.pack("<iqq", bits, outliers, group) + s("{}")
    for _ in range(layers):
        if method == "kvquant":
            cen = [(-1.0 + 2.0 * (i + 0.5) / K) for i in range(K)]
            body += struct.pack(f"<{K}f", *cen) + struct.pack(f"<{C}f", *([0.0] * C))
            body += struct.pack(f"<{C}f", *([1.0] * C)) + struct.pack(f"<{K}f", *cen)
        else:
            book = [((i * 7) % 13) / 13.0 for i in range(C * K)]
            body += struct.pack(f"<{C * K}f", *book) + struct.pack(f"<{C * K}f", *book)
    head = b"AQKVQTAB" + struct.pack("<I", 1)
    length = len(head) + 8 + len(body) + 8
    out = head + struct.pack("<Q", length) + body
    return out + struct.pack("<Q", fnv1a64(out))


def main():
    d = "fuzz/corpus/quant_tables"
    os.makedirs(d, exist_ok=True)
    kvq = tables("kvquant", 2, 1, 0)
    cq = tables("cq", 2, 0, 4)
    seeds = [kvq, cq, kvq[: len(kvq) // 2], cq[:-1]]
    flipped = bytearray(kvq)
    flipped[40] ^= 1
    seeds.append(bytes(flipped))
    seeds.append(tables("other", 2, 0, 0))
    for b in seeds:
        with open(os.path.join(d, hashlib.sha1(b).hexdigest()), "wb") as f:
            f.write(b)


if __name__ == "__main__":
    main()
