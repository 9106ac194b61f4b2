#!/usr/bin/env python3
"""Golden vectors for aquakv's ggml block formats, made with the `gguf` Python package.

Run with the reference venv (scripts/ref_venv.sh):
    ~/.cache/aquakv/ref-venv/bin/python scripts/make_ggml_goldens.py
Writes tests/data/ggml_goldens.bin, read by tests/test_ggml_types.cpp.

For every type aquakv decodes there is one record:
  - quantizable types (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1): seeded float32 input (with edge-case
    blocks: zeros, constants, rounding ties, sign of the largest magnitude, tiny and large
    scales), its blocks from gguf.quants.quantize, and gguf.quants.dequantize of those blocks;
  - other types (K-quants, F16, BF16, F32): seeded random block bytes (fp16 scale fields drawn
    finite) and gguf.quants.dequantize of them.

File format (little-endian), after the 8-byte magic b"AQKVGLD1" and a u32 record count:
  u32 type id | u32 name length | name | u64 n values | u64 n input floats (0 or n) |
  input f32[] | u64 n block bytes | bytes | dequantized f32[n]
"""
from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants
from gguf.constants import GGML_QUANT_SIZES

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "ggml_goldens.bin"
SEED = 20261126

QUANTIZABLE = [T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1]
# Offsets of fp16 scale fields inside each block of the byte-random types; they are redrawn as
# finite halves so the goldens hold no NaN/inf (whose payloads would make bit comparison moot).
F16_FIELDS = {
    T.Q2_K: [80, 82],
    T.Q3_K: [108],
    T.Q4_K: [0, 2],
    T.Q5_K: [0, 2],
    T.Q6_K: [208],
}
BYTE_RANDOM = [T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K, T.F16, T.BF16, T.F32]


def edge_blocks(rng: np.random.Generator) -> list[np.ndarray]:
    """32-value blocks that exercise the quantizers' corner cases."""
    b = []
    b.append(np.zeros(32, np.float32))                               # d = 0
    b.append(np.full(32, 0.75, np.float32))                          # constant (max == min)
    b.append(np.full(32, -3.0, np.float32))
    # Exact ties: with max |x| = 127 the Q8_0 scale is 1, so x = k + 0.5 rounds away from 0.
    ties = np.concatenate([[127.0], np.arange(-15.5, 15.5, 1.0)]).astype(np.float32)
    b.append(ties)
    neg = rng.standard_normal(32).astype(np.float32)
    neg[7] = -9.0                                                    # largest magnitude < 0
    b.append(neg)
    eq = rng.standard_normal(32).astype(np.float32)
    eq[3], eq[20] = 5.0, -5.0                                        # |max| tie: first wins
    b.append(eq)
    b.append((rng.standard_normal(32) * 1e-6).astype(np.float32))   # fp16-subnormal scales
    b.append((rng.standard_normal(32) * 3e3).astype(np.float32))    # large scale
    b.append(np.arange(32, dtype=np.float32) / 7.0)                  # ramp
    return b


def quantizable_input(rng: np.random.Generator, n: int) -> np.ndarray:
    blocks = edge_blocks(rng)
    while len(blocks) < n // 32:
        scale = 10.0 ** rng.uniform(-3, 2)
        shift = rng.uniform(-1, 1) * scale * rng.integers(0, 2)
        blocks.append((rng.standard_normal(32) * scale + shift).astype(np.float32))
    return np.concatenate(blocks).astype(np.float32)


def finite_halves(rng: np.random.Generator, count: int) -> np.ndarray:
    """Random finite fp16 values spanning normal and subnormal magnitudes, both signs."""
    mags = 10.0 ** rng.uniform(-6, 1, count)
    signs = np.where(rng.random(count) < 0.5, -1.0, 1.0)
    return (mags * signs).astype(np.float16)


def byte_random_blocks(rng: np.random.Generator, qtype: T, n: int) -> np.ndarray:
    block_values, block_bytes = GGML_QUANT_SIZES[qtype]
    n_blocks = n // block_values
    if qtype == T.F16:
        return finite_halves(rng, n).view(np.uint8)
    if qtype == T.BF16:
        f = (rng.standard_normal(n) * 10.0 ** rng.uniform(-4, 4, n)).astype(np.float32)
        bits = (f.view(np.uint32) >> 16).astype(np.uint16)        # truncation: any finite bf16
        return bits.view(np.uint8)
    if qtype == T.F32:
        return (rng.standard_normal(n) * 100).astype(np.float32).view(np.uint8)
    raw = rng.integers(0, 256, size=(n_blocks, block_bytes), dtype=np.uint8)
    for off in F16_FIELDS[qtype]:
        raw[:, off:off + 2] = finite_halves(rng, n_blocks).view(np.uint8).reshape(n_blocks, 2)
    return raw.reshape(-1)


def record(qtype: T, inputs: np.ndarray | None, blocks: np.ndarray, deq: np.ndarray) -> bytes:
    name = qtype.name.encode()
    n = deq.size
    out = struct.pack("<II", int(qtype), len(name)) + name
    out += struct.pack("<QQ", n, 0 if inputs is None else n)
    if inputs is not None:
        out += inputs.astype("<f4").tobytes()
    out += struct.pack("<Q", blocks.size) + blocks.tobytes()
    out += deq.astype("<f4").tobytes()
    return out


def main() -> int:
    rng = np.random.default_rng(SEED)
    records = []
    for qtype in QUANTIZABLE:
        x = quantizable_input(rng, 1024)
        blocks = quants.quantize(x.reshape(1, -1), qtype).reshape(-1)
        deq = quants.dequantize(blocks.reshape(1, -1), qtype).reshape(-1)
        records.append(record(qtype, x, blocks, deq))
    for qtype in BYTE_RANDOM:
        n = 2048 if GGML_QUANT_SIZES[qtype][0] == 256 else 1024
        blocks = byte_random_blocks(rng, qtype, n)
        deq = quants.dequantize(blocks.reshape(1, -1), qtype).reshape(-1).astype(np.float32)
        assert np.all(np.isfinite(deq)), qtype.name
        records.append(record(qtype, None, blocks, deq))
    data = b"AQKVGLD1" + struct.pack("<I", len(records)) + b"".join(records)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    tmp = OUT.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(OUT)
    print(f"wrote {OUT} ({len(data)} bytes, {len(records)} records)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
