#!/usr/bin/env python3
"""Makes the tokenizer goldens under tests/data/tokenizer/ with llama.cpp's tokenizer
(llama-cpp-python, vocab_only) as the independent reference.

  ~/.cache/aquakv/ref-venv/bin/python scripts/make_tokenizer_goldens.py [--model GGUF]

Writes
  corpus.json            the test texts (scripts/tokenizer_corpus.py), shared by both goldens.
  smollm2_goldens.json   ids of every corpus piece (scripts/tokenizer_corpus.py) for the default
                         model's vocabulary, pieces, decodes, and the same vocabulary run with
                         other pre-tokenizers (a vocab-only copy of the GGUF with
                         tokenizer.ggml.pre changed, so each regex set is checked against
                         llama.cpp on real merges).
  spm_vocab.gguf         a small SentencePiece-style ("llama" model) vocab-only GGUF: a BPE
                         vocabulary trained here with Hugging Face `tokenizers` (Metaspace "▁"),
                         with byte-fallback <0xXX> tokens, user-defined and control tokens.
                         Kept when present (training is not reproducible bit for bit); pass
                         --retrain-spm to make a new one.
  spm_goldens.json       llama.cpp's ids/pieces/decodes for it, with two flag settings.
  gemma3_goldens.json    with --gemma GGUF (only this file is written then): Gemma 3's
                         SentencePiece vocabulary (262,144 tokens): ids of every corpus piece,
                         pieces (digest plus a sample), decodes, and the count and FNV-1a 64 of
                         the ids of the whole WikiText-2 test file (the file itself is not copied).
Compact format: corpus.json holds each piece once ({"kind", "text"} or {"kind", "hex"} for
malformed UTF-8); a case is [piece index, flags (1: add_special, 2: parse_special), ids], with
ids as base64 of their unsigned LEB128 varints.
"""
import argparse
import base64
import ctypes
import hashlib
import json
import os
import sys
import tempfile

import gguf
import llama_cpp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tokenizer_corpus  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "data", "tokenizer")
DEFAULT_MODEL = os.path.expanduser("~/.cache/aquakv/models/SmolLM2-135M-Instruct.Q4_1.gguf")


class Ref:
    """llama.cpp's tokenizer for one GGUF."""

    def __init__(self, path):
        self.llm = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
        self.vocab = self.llm._model.vocab
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)

    def tokenize(self, data, add_special, parse_special):
        n = len(data) + 16
        while True:
            buf = (llama_cpp.llama_token * n)()
            k = llama_cpp.llama_tokenize(self.vocab, data, len(data), buf, n, add_special,
                                         parse_special)
            if k >= 0:
                return list(buf[:k])
            n = -k

    def piece(self, tok, special):
        buf = ctypes.create_string_buffer(1024)
        k = llama_cpp.llama_token_to_piece(self.vocab, tok, buf, 1024, 0, special)
        assert 0 <= k <= 1024
        return buf.raw[:k]

    def detokenize(self, ids, remove_special, unparse_special):
        arr = (llama_cpp.llama_token * max(1, len(ids)))(*ids)
        size = 64 * len(ids) + 64
        buf = ctypes.create_string_buffer(size)
        k = llama_cpp.llama_detokenize(self.vocab, arr, len(ids), buf, size, remove_special,
                                       unparse_special)
        assert 0 <= k <= size
        return buf.raw[:k]


def text_field(data):
    try:
        return {"text": data.decode("utf-8")}
    except UnicodeDecodeError:
        return {"hex": data.hex()}


def pack_ids(ids):
    out = bytearray()
    for v in ids:
        assert v >= 0
        while True:
            b = v & 0x7F
            v >>= 7
            out.append(b | (0x80 if v else 0))
            if not v:
                break
    return base64.b64encode(bytes(out)).decode()


def fnv1a64(chunks):
    h = 0xCBF29CE484222325
    for c in chunks:
        for b in c:
            h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def pieces_digest(ref, special):
    # Each piece as 4-byte little-endian length then its bytes, in id order.
    chunks = []
    for t in range(ref.n_vocab):
        p = ref.piece(t, special)
        chunks.append(len(p).to_bytes(4, "little"))
        chunks.append(p)
    return fnv1a64(chunks)


def cases_for(ref, corpus, indices, flag_sets):
    """[[piece index, flags, packed ids]] for the chosen pieces; also returns the raw ids."""
    out, raw = [], []
    for i in indices:
        kind, data = corpus[i]
        for add_special, parse_special in flag_sets(i, kind):
            ids = ref.tokenize(data, add_special, parse_special)
            out.append([i, int(add_special) | 2 * int(parse_special), pack_ids(ids)])
            raw.append(ids)
    return out, raw


def decode_cases(ref, raw, every):
    """[[case index, flags (1: remove_special, 2: unparse_special), llama.cpp's text]]; the
    text is {"text": ..} or {"hex": ..} like corpus pieces."""
    out = []
    for i, ids in enumerate(raw):
        if i % every or not ids:
            continue
        for flags in (0, 3, 2):
            out.append([i, flags, text_field(ref.detokenize(ids, bool(flags & 1),
                                                            bool(flags & 2)))])
    return out


def copy_with(src_path, dst_path, overrides):
    """Vocab-only copy of a GGUF's metadata (no tensors) with some keys replaced."""
    r = gguf.GGUFReader(src_path)
    arch = r.fields["general.architecture"].contents()
    w = gguf.GGUFWriter(dst_path, arch)
    for key, f in r.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture" or key in overrides:
            continue
        vtype = f.types[0]
        sub = f.types[1] if vtype == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(key, f.contents(), vtype, sub)
    for key, (val, vtype) in overrides.items():
        if val is not None:
            w.add_key_value(key, val, vtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def smollm(model, corpus):
    ref = Ref(model)
    main, raw = cases_for(ref, corpus, range(len(corpus)), lambda i, k: [(False, False)] + (
        [(True, True), (False, True)] if k in ("special", "misc") or i % 9 == 0 else []))
    sample = list(range(0, ref.n_vocab, 97)) + list(range(0, 17))
    doc = {
        "generator": "scripts/make_tokenizer_goldens.py",
        "reference": f"llama-cpp-python {llama_cpp.__version__} (llama.cpp tokenizer, vocab_only)",
        "model_file": os.path.basename(model),
        "model_sha256": hashlib.sha256(open(model, "rb").read()).hexdigest(),
        "n_vocab": ref.n_vocab,
        "pieces_fnv1a64": {"special": pieces_digest(ref, True),
                           "plain": pieces_digest(ref, False)},
        "sample_pieces": [[t, ref.piece(t, False).hex(), ref.piece(t, True).hex()]
                          for t in sample],
        "corpus": "corpus.json",
        "cases": main,
        "decode_cases": decode_cases(ref, raw, 11),
        "pre_variants": {},
    }
    subset = [i for i, c in enumerate(corpus)
              if i % 10 == 0 or c[0] in ("scripts", "contractions", "special", "emoji", "marks")
              or (c[0] in ("numbers", "whitespace", "random") and i % 3 == 0)]
    with tempfile.TemporaryDirectory() as tmp:
        for pre in ("gpt-2", "llama-bpe", "qwen2", "deepseek-llm", "deepseek-coder", "default",
                    "falcon", "starcoder", "stablelm2"):
            path = os.path.join(tmp, f"{pre}.gguf")
            copy_with(model, path, {"tokenizer.ggml.pre": (pre, gguf.GGUFValueType.STRING)})
            vref = Ref(path)
            doc["pre_variants"][pre] = cases_for(vref, corpus, subset,
                                                 lambda i, k: [(False, False)])[0]
            del vref
            print(f"pre {pre}: {len(doc['pre_variants'][pre])} cases", file=sys.stderr)
    return doc


def wikitext_ids_digest(ref):
    path = os.path.join(tokenizer_corpus.SHARED, "data/wikitext-2-raw-test.txt")
    ids = ref.tokenize(open(path, "rb").read(), True, False)
    return {"file": "wikitext-2-raw-test.txt", "add_special": True, "parse_special": False,
            "n_ids": len(ids), "ids_fnv1a64": fnv1a64([b"".join(i.to_bytes(4, "little")
                                                                  for i in ids)])}


# Gemma's own markers and whitespace tokens; case indices past the corpus refer to these.
GEMMA_EXTRA = [("special", s.encode()) for s in (
    "<start_of_turn>user\nWrite a haiku.<end_of_turn>\n<start_of_turn>model\n",
    "<bos>text<eos><pad>", "a<end_of_turn>b<start_of_turn>c", "<start_of_image><end_of_image>",
    "[multimodal]", "<unused0><unused99>", "<mask> <unk>", "  two  spaces   three\t\ttabs\n\n\n",
    "<start_of_turn", "end_of_turn>", " <start_of_turn> ", "<h1>Title</h1>\n<table><tr><td>x",
    "\u2581already\u2581escaped", "trailing space ", "\n", " ", "")]


def gemma3(model, corpus):
    ref = Ref(model)
    corpus = corpus + GEMMA_EXTRA
    main, raw = cases_for(ref, corpus, range(len(corpus)), lambda i, k: [(False, False)] + (
        [(True, True), (False, True)] if k in ("special", "misc") or i % 9 == 0 else []))
    sample = list(range(0, ref.n_vocab, 211)) + list(range(0, 300))
    return {
        "generator": "scripts/make_tokenizer_goldens.py --gemma",
        "reference": f"llama-cpp-python {llama_cpp.__version__} (llama.cpp tokenizer, vocab_only)",
        "model_file": os.path.basename(model),
        "model_sha256": hashlib.sha256(open(model, "rb").read()).hexdigest(),
        "n_vocab": ref.n_vocab,
        "pieces_fnv1a64": {"special": pieces_digest(ref, True),
                           "plain": pieces_digest(ref, False)},
        "sample_pieces": [[t, ref.piece(t, False).hex(), ref.piece(t, True).hex()]
                          for t in sample],
        "corpus": "corpus.json",
        "extra_pieces": [{"kind": k, **text_field(d)} for k, d in GEMMA_EXTRA],
        "cases": main,
        "decode_cases": decode_cases(ref, raw, 11),
        "wikitext": wikitext_ids_digest(ref),
    }


def train_spm_vocab():
    from tokenizers import SentencePieceBPETokenizer
    wiki = open(os.path.join(tokenizer_corpus.SHARED, "data/calibration/wiki.txt"),
                encoding="utf-8").read()[:400000]
    texts = wiki.split("\n") + tokenizer_corpus.SCRIPTS[:6]
    tk = SentencePieceBPETokenizer(replacement="▁", add_prefix_space=True)
    tk.train_from_iterator(texts, vocab_size=1800, min_frequency=2, limit_alphabet=180,
                           special_tokens=[], show_progress=False)
    model = json.loads(tk.to_str())["model"]
    by_id = sorted(model["vocab"].items(), key=lambda kv: kv[1])
    merges = model["merges"]
    merged = ["".join(m) if isinstance(m, list) else m.replace(" ", "") for m in merges]
    rank = {}
    for i, s in enumerate(merged):
        rank.setdefault(s, i)
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [2, 3, 3] + [6] * 256
    scores = [0.0] * len(tokens)
    for text, _ in by_id:
        if text in tokens:
            continue
        tokens.append(text)
        types.append(1)
        r = rank.get(text)
        # Merge results score by merge order; every 7th shares its predecessor's score so that
        # ties (broken by position) are exercised. Single characters score lowest.
        if r is None:
            scores.append(-1e6 - len(tokens))
        else:
            scores.append(-float(r - (r % 7 == 0 and r > 0)))
    tokens += ["<|user|>", "<|bot|>", "<|ctl|>", "▁<|sp|>"]
    types += [4, 4, 3, 4]
    scores += [0.0] * 4
    return tokens, scores, types


def write_spm_gguf(path, tokens, scores, types, add_bos=True, add_eos=False, space=True):
    w = gguf.GGUFWriter(path, "llama")
    w.add_context_length(128)
    w.add_embedding_length(64)
    w.add_block_count(1)
    w.add_feed_forward_length(128)
    w.add_head_count(1)
    w.add_head_count_kv(1)
    w.add_rope_dimension_count(64)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(add_bos)
    w.add_add_eos_token(add_eos)
    w.add_add_space_prefix(space)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


SPM_EXTRA = [("special", s.encode()) for s in
             ("<|user|>hi<|bot|>yo<|ctl|>x", "a<s>b</s>c<unk>d", " <|user|> <|ctl|> ", "<|sp|>",
              "x <|sp|> y", "<|ctl|><|ctl|>", "<0x41><0xFF>")]


def read_spm_vocab(path):
    r = gguf.GGUFReader(path)
    return (r.fields["tokenizer.ggml.tokens"].contents(),
            r.fields["tokenizer.ggml.scores"].contents(),
            r.fields["tokenizer.ggml.token_type"].contents())


def spm(corpus, retrain):
    # The committed vocabulary is reused (training is not bit-reproducible across runs);
    # --retrain-spm makes a new one.
    path = os.path.join(OUT, "spm_vocab.gguf")
    if retrain or not os.path.exists(path):
        tokens, scores, types = train_spm_vocab()
        write_spm_gguf(path, tokens, scores, types)
    else:
        tokens, scores, types = read_spm_vocab(path)
    ref = Ref(path)
    sub = [i for i, c in enumerate(corpus)
           if i % 4 == 0 or c[0] not in ("prose", "code", "numbers", "whitespace")]
    flags = lambda i, k: [(True, True)] + ([(False, False), (True, False)] if i % 5 == 0 else [])
    cases, raw = cases_for(ref, corpus, sub, flags)
    doc = {
        "generator": "scripts/make_tokenizer_goldens.py",
        "reference": f"llama-cpp-python {llama_cpp.__version__} (llama.cpp tokenizer, vocab_only)",
        "vocab_file": "spm_vocab.gguf",
        "vocab_sha256": hashlib.sha256(open(path, "rb").read()).hexdigest(),
        "pieces": [[ref.piece(t, False).hex(), ref.piece(t, True).hex()]
                   for t in range(ref.n_vocab)],
        "corpus": "corpus.json",
        "cases": cases,
        "decode_cases": decode_cases(ref, raw, 9),
    }
    del ref
    with tempfile.TemporaryDirectory() as tmp:
        p2 = os.path.join(tmp, "v.gguf")
        write_spm_gguf(p2, tokens, scores, types, add_bos=False, add_eos=True, space=False)
        ref2 = Ref(p2)
        sub2 = [i for i in sub if i % 5 == 0 or corpus[i][0] == "special"]
        cases2, raw2 = cases_for(ref2, corpus, sub2, lambda i, k: [(True, True), (False, False)])
        doc["variant_no_bos_eos_no_space"] = cases2
        doc["variant_decode_cases"] = decode_cases(ref2, raw2, 7)
    return doc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--retrain-spm", action="store_true",
                    help="train a new SentencePiece test vocabulary instead of the committed one")
    ap.add_argument("--gemma", metavar="GGUF",
                    help="write only gemma3_goldens.json, for this Gemma 3 GGUF")
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    corpus = tokenizer_corpus.pieces() + SPM_EXTRA
    print(f"corpus: {len(corpus)} pieces, {sum(len(b) for _, b in corpus)} bytes", file=sys.stderr)
    if args.gemma:
        docs = [("gemma3_goldens.json", gemma3(args.gemma, corpus))]
    else:
        docs = [("corpus.json", {"generator": "scripts/tokenizer_corpus.py",
                                 "pieces": [{"kind": k, **text_field(d)} for k, d in corpus]})]
        docs += [("smollm2_goldens.json", smollm(args.model, corpus)),
                 ("spm_goldens.json", spm(corpus, args.retrain_spm))]
    for name, doc in docs:
        tmp = os.path.join(OUT, name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(doc, f, ensure_ascii=False, separators=(",", ":"))
            f.write("\n")
        os.replace(tmp, os.path.join(OUT, name))
        print(f"wrote {name}: {os.path.getsize(os.path.join(OUT, name))} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
