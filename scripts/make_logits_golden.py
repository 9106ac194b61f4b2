#!/usr/bin/env python3
"""Writes tests/data/logits_golden.bin with bench/llama_cpp_eval.py's LogitsFileWriter (the
Python implementation of eval/logits_file.h), from log-probs given by a closed formula that
tests/test_eval_logits_file.cpp recomputes; tests/data/logits_golden_model.bin stands in for the
model file (its fingerprint goes into the header). Run: ~/.cache/aquakv/ref-venv/bin/python scripts/make_logits_golden.py"""
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
from llama_cpp_eval import LogitsFileWriter, fnv1a64_tokens  # noqa: E402

V, CTX = 300, 5
data = os.path.join(ROOT, "tests", "data")
model = os.path.join(data, "logits_golden_model.bin")
with open(model, "wb") as f:
    f.write(bytes((i * 37 + 11) % 256 for i in range(1000)))
window = [(7 * t + 3) % V for t in range(CTX)]
w = LogitsFileWriter(model, "golden.txt", CTX, [fnv1a64_tokens(window)])
w.n_vocab = V
# logit(t, v) = sin(0.37 v + t) * (3 + t) : the test computes the same in double.
logits = np.array([[np.sin(0.37 * v + t) * (3 + t) for v in range(V)] for t in range(CTX - 1)])
m = logits.max(axis=1, keepdims=True)
lp = logits - (m + np.log(np.exp(logits - m).sum(axis=1, keepdims=True)))
w.add_window(lp, np.array(window[1:]))
w.save(os.path.join(data, "logits_golden.bin"))
print("wrote", os.path.join(data, "logits_golden.bin"))
