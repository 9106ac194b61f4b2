#!/usr/bin/env python3
"""Writes the seed corpus fuzz/corpus/lorc_plan: small LoRC plans (the layout of docs/ADAPTERS.md
"LoRC plans", written here independently of the C++ writer), a valid one and damaged ones
(truncated, flipped byte, a rank of 0, a rank above the width, a basis that is not orthonormal).
Run from the repository root."""
import hashlib
import os
import struct

from make_layer_share_seeds import fnv1a64, s  # the checksum and string encoding of every plan file


def plan(ranks, heads=2, hd=2, scale=1.0) -> bytes:
    c = heads * hd
    body = s("llama") + struct.pack("<qqqqQ", len(ranks), heads, hd, c, 0x1234)
    for layer in ranks:
        for r in layer:
            body += struct.pack("<qd", r, 3.0)
            # Basis: the first r unit vectors (rows = channels, columns = components).
            basis = [scale if i == j else 0.0 for i in range(c) for j in range(max(r, 0))]
            body += struct.pack(f"<{len(basis)}f", *basis) + struct.pack(f"<{c}f", *([0.25] * c))
    body += s('{"method": "lorc"}')
    head = b"AQKVLORC" + struct.pack("<I", 1)
    length = len(head) + 8 + len(body) + 8
    out = head + struct.pack("<Q", length) + body
    return out + struct.pack("<Q", fnv1a64(out))


def main():
    d = "fuzz/corpus/lorc_plan"
    os.makedirs(d, exist_ok=True)
    good = plan([[4, 2], [1, 3]])
    seeds = [good, plan([[2, 2]]), good[: len(good) // 2], good[:-1], plan([[0, 2]]), plan([[5, 2]]),
             plan([[2, 2]], scale=2.0)]
    flipped = bytearray(good)
    flipped[70] ^= 1
    seeds.append(bytes(flipped))
    for b in seeds:
        with open(os.path.join(d, hashlib.sha1(b).hexdigest()), "wb") as f:
            f.write(b)


if __name__ == "__main__":
    main()
