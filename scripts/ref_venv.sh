#!/usr/bin/env bash
# Creates (once) the Python venv of reference tools used to make goldens and side-by-side
# benchmarks: gguf, numpy, tokenizers, and llama-cpp-python built from its PyPI source
# distribution. Prints the venv's python. Never needed by the build or by CI.
set -euo pipefail
cache=${AQUAKV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/aquakv}
venv="$cache/ref-venv"
py="$venv/bin/python"
if [[ -x "$py" ]] && "$py" -c "import gguf, numpy, tokenizers, llama_cpp" 2>/dev/null; then echo "$py"; exit 0; fi
python3 -m venv "$venv" >&2
"$py" -m pip install -q --disable-pip-version-check numpy gguf==0.19.0 tokenizers==0.23.3 >&2
# llama.cpp's default native build (-march=native) died with SIGILL on a virtual machine whose
# CPU advertises AMX / AVX-512 BF16 without fully enabling them; build for the host's basic SIMD
# levels explicitly instead (as llama.cpp's GGML_NATIVE=OFF builds do).
flags=$(grep -m1 '^flags' /proc/cpuinfo || true)
has() { [[ " $flags " == *" $1 "* ]] && echo ON || echo OFF; }
CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=$(has avx) -DGGML_AVX2=$(has avx2) -DGGML_FMA=$(has fma) \
-DGGML_F16C=$(has f16c) -DGGML_AVX512=$(has avx512f) -DGGML_AVX512_VNNI=$(has avx512_vnni) \
-DGGML_AVX512_BF16=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DLLAMA_CURL=OFF" \
CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) "$py" -m pip install -q --disable-pip-version-check \
  --no-binary llama-cpp-python llama-cpp-python==0.3.36 >&2
echo "$py"
