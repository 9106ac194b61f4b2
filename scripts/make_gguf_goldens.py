#!/usr/bin/env python3
"""GGUF fixtures and goldens for tests/test_gguf.cpp and tests/test_ggml_types.cpp, made with the
`gguf` Python package (GGUFWriter writes the fixtures, GGUFReader reads every summary).

Run with the reference venv (scripts/ref_venv.sh):
    ~/.cache/aquakv/ref-venv/bin/python scripts/make_gguf_goldens.py [--model PATH]

Writes
  tests/data/gguf/{all_types_v3,align64_v2,align1_v3}.gguf   small fixtures (every value type,
      nested arrays, several alignments; v2 is the v3 layout with the version field set to 2,
      which is what distinguishes the two little-endian formats)
  tests/data/gguf/<name>.summary.json                          GGUFReader's view of each
  tests/data/smollm2_gguf_summary.json                         GGUFReader's view of the model
  tests/data/smollm2_tensor_rows.json                          rows of model tensors
      dequantized by gguf.quants.dequantize (FNV-1a 64 of the float32 bytes, head, sum)

Summary format: {"version", "alignment", "data_offset", "file_size",
  "metadata": [{"key", "types": [type ids, outer to leaf], "n": top-level count (arrays),
                "n_leaves", "fnv": hash of the leaves, "values" (<= 32 leaves) or "head"}],
  "tensors": [{"name", "type", "shape" (ggml order), "offset" (relative to the data section),
               "n_bytes"}]}
Leaves are the scalar values of a field in file order (nested arrays flattened). Leaf hash:
FNV-1a 64 over, per leaf: strings as u64 length + bytes, BOOL as one byte, unsigned integers
as u64, signed as i64, floats as f64 (all little-endian).
"""
from __future__ import annotations

import argparse
import json
import os
import struct
import sys
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as QT
from gguf import GGUFReader, GGUFValueType as VT, GGUFWriter, quants

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
FIXTURES = DATA / "gguf"
DEFAULT_MODEL = Path.home() / ".cache" / "aquakv" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"

UNSIGNED = {VT.UINT8, VT.UINT16, VT.UINT32, VT.UINT64}
SIGNED = {VT.INT8, VT.INT16, VT.INT32, VT.INT64}
FLOATS = {VT.FLOAT32, VT.FLOAT64}


def fnv1a64(data: bytes, h: int = 0xCBF29CE484222325) -> int:
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def leaf_value(part: np.ndarray, t: VT):
    if t == VT.STRING:
        return bytes(part).decode("utf-8")
    v = part[0]
    if t == VT.BOOL:
        return bool(v)
    if t in FLOATS:
        return float(v)
    return int(v)


def leaf_bytes(v, t: VT) -> bytes:
    if t == VT.STRING:
        b = v.encode("utf-8")
        return struct.pack("<Q", len(b)) + b
    if t == VT.BOOL:
        return bytes([1 if v else 0])
    if t in UNSIGNED:
        return struct.pack("<Q", v)
    if t in SIGNED:
        return struct.pack("<q", v)
    return struct.pack("<d", v)


def summarize_field(field) -> dict:
    types = [int(t) for t in field.types]
    leaf_t = VT(types[-1])
    leaves = [leaf_value(field.parts[i], leaf_t) for i in field.data]
    h = 0xCBF29CE484222325
    for v in leaves:
        h = fnv1a64(leaf_bytes(v, leaf_t), h)
    out = {"key": field.name, "types": types, "n_leaves": len(leaves), "fnv": f"{h:016x}"}
    if types[0] == VT.ARRAY:
        out["n"] = int(field.parts[4][0])  # parts: key len, key, type, elem type, count, ...
    if len(leaves) <= 32:
        out["values"] = leaves
    else:
        out["head"] = leaves[:4]
    return out


def summarize(path: Path) -> dict:
    r = GGUFReader(path)
    metadata = [summarize_field(f) for name, f in r.fields.items() if not name.startswith("GGUF.")]
    tensors = [{
        "name": t.name,
        "type": int(t.tensor_type),
        "shape": [int(d) for d in t.shape],
        "offset": int(t.data_offset - r.data_offset),
        "n_bytes": int(t.n_bytes),
    } for t in r.tensors]
    version = int(r.fields["GGUF.version"].parts[0][0])
    return {"version": version, "alignment": int(r.alignment), "data_offset": int(r.data_offset),
            "file_size": path.stat().st_size, "metadata": metadata, "tensors": tensors}


def write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def add_all_values(w: GGUFWriter) -> None:
    w.add_uint8("test.u8", 200)
    w.add_int8("test.i8", -100)
    w.add_uint16("test.u16", 60000)
    w.add_int16("test.i16", -30000)
    w.add_uint32("test.u32", 4000000000)
    w.add_int32("test.i32", -2000000000)
    w.add_float32("test.f32", 0.1)
    w.add_bool("test.bool_true", True)
    w.add_bool("test.bool_false", False)
    w.add_string("test.string", "llama \u00e9\u4e2d\U0001F600 end")
    w.add_key_value("test.empty_string", "", VT.STRING)
    w.add_uint64("test.u64", 18446744073709551615)
    w.add_int64("test.i64", -9223372036854775807)
    w.add_float64("test.f64", -1.2345678901234567e-300)
    w.add_key_value("test.arr_u8", [1, 2, 255], VT.ARRAY, sub_type=VT.UINT8)
    w.add_key_value("test.arr_i16", [-1, 2, -32768], VT.ARRAY, sub_type=VT.INT16)
    w.add_key_value("test.arr_u64", [0, 2**63, 2**64 - 1], VT.ARRAY, sub_type=VT.UINT64)
    w.add_key_value("test.arr_f32", [0.5, -2.25, 1e30], VT.ARRAY, sub_type=VT.FLOAT32)
    w.add_key_value("test.arr_f64", [1.0 / 3.0], VT.ARRAY, sub_type=VT.FLOAT64)
    w.add_key_value("test.arr_bool", [True, False, True], VT.ARRAY, sub_type=VT.BOOL)
    w.add_array("test.arr_str", ["a", "", "\u00fc\u00df"])
    w.add_array("test.arr_i32_long", list(range(-20, 20)))
    w.add_array("test.nested_int", [[1, 2, 3], [4], [5, 6]])
    w.add_array("test.nested_str", [["x", "yy"], ["zzz"]])
    w.add_array("test.nested3", [[[1, 2], [3]], [[4, 5, 6]]])


def add_tensors(w: GGUFWriter, rng: np.random.Generator) -> None:
    w.add_tensor("f32_tensor", rng.standard_normal((3, 4)).astype(np.float32))
    w.add_tensor("f16_tensor", rng.standard_normal((2, 8)).astype(np.float16))
    x = rng.standard_normal((2, 64)).astype(np.float32)
    w.add_tensor("q8_0_tensor", quants.quantize(x, QT.Q8_0), raw_dtype=QT.Q8_0)
    y = rng.standard_normal(32).astype(np.float32)
    w.add_tensor("q4_1_tensor", quants.quantize(y, QT.Q4_1), raw_dtype=QT.Q4_1)
    z = rng.standard_normal((2, 3, 4)).astype(np.float32)
    w.add_tensor("bf16_3d", quants.quantize(z, QT.BF16), raw_dtype=QT.BF16)


def make_fixture(name: str, alignment: int | None, version: int, with_values: bool) -> Path:
    path = FIXTURES / f"{name}.gguf"
    tmp = path.with_suffix(".tmp")
    w = GGUFWriter(tmp, arch="llama")
    if alignment is not None:
        w.add_custom_alignment(alignment)
    w.add_name(name)
    if with_values:
        add_all_values(w)
    add_tensors(w, np.random.default_rng(len(name)))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    if version != 3:
        data = bytearray(tmp.read_bytes())
        data[4:8] = struct.pack("<I", version)
        tmp.write_bytes(bytes(data))
    tmp.replace(path)
    return path


def tensor_rows(model: Path) -> dict:
    r = GGUFReader(model)
    wanted = ["token_embd.weight", "blk.0.attn_q.weight", "blk.0.attn_norm.weight",
              "blk.29.ffn_down.weight", "output_norm.weight"]
    out = {"file_size": model.stat().st_size, "tensors": []}
    for t in r.tensors:
        if t.name not in wanted:
            continue
        data = t.data.reshape((-1, t.data.shape[-1])) if t.data.ndim > 1 else t.data.reshape(1, -1)
        rows = data.shape[0]
        entry = {"name": t.name, "type": int(t.tensor_type), "rows": []}
        for row in sorted({0, 1, rows // 2, rows - 1}):
            if row >= rows:
                continue
            v = quants.dequantize(data[row:row + 1], t.tensor_type).reshape(-1).astype("<f4")
            entry["rows"].append({"row": row, "n": int(v.size), "fnv": f"{fnv1a64(v.tobytes()):016x}",
                                  "head": [float(x) for x in v[:4]], "sum": float(np.sum(v, dtype=np.float64))})
        out["tensors"].append(entry)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=Path(os.environ.get("AQUAKV_MODEL", DEFAULT_MODEL)))
    args = ap.parse_args()
    FIXTURES.mkdir(parents=True, exist_ok=True)
    for name, align, version, values in [("all_types_v3", None, 3, True),
                                          ("align64_v2", 64, 2, True),
                                          ("align1_v3", 1, 3, False)]:
        path = make_fixture(name, align, version, values)
        write_json(FIXTURES / f"{name}.summary.json", summarize(path))
        print(f"wrote {path} ({path.stat().st_size} bytes)")
    if args.model.exists():
        write_json(DATA / "smollm2_gguf_summary.json", summarize(args.model))
        write_json(DATA / "smollm2_tensor_rows.json", tensor_rows(args.model))
        print(f"wrote model goldens from {args.model}")
    else:
        print(f"model {args.model} not found; model goldens not updated", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
