#!/usr/bin/env python3
"""Writes the seed corpus fuzz/corpus/layer_share: small KVSharer layer-sharing plans (the layout
of docs/ADAPTERS.md "Layer-sharing plans", written here independently of the C++ writer), a valid
one and damaged ones (truncated, flipped byte, a source that is itself shared, a source after its
layer). Run from the repository root."""
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


def plan(source, heads=3, hd=64) -> bytes:
    body = s("llama") + struct.pack("<qqqqQ", len(source), heads, hd, heads * hd, 0x1234)
    body += struct.pack(f"<{len(source)}i", *source) + s('{"method": "kvsharer"}')
    head = b"AQKVSHAR" + struct.pack("<I", 1)
    length = len(head) + 8 + len(body) + 8
    out = head + struct.pack("<Q", length) + body
    return out + struct.pack("<Q", fnv1a64(out))


def main():
    d = "fuzz/corpus/layer_share"
    os.makedirs(d, exist_ok=True)
    good = plan([-1, -1, 0, -1, 1, -1])
    seeds = [good, plan([-1] * 4), good[: len(good) // 2], good[:-1], plan([-1, 0, 1]), plan([-1, 2, -1])]
    flipped = bytearray(good)
    flipped[60] ^= 1
    seeds.append(bytes(flipped))
    for b in seeds:
        with open(os.path.join(d, hashlib.sha1(b).hexdigest()), "wb") as f:
            f.write(b)


if __name__ == "__main__":
    main()
