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
CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) "$py" -m pip install -q --disable-pip-version-check \
  --no-binary llama-cpp-python llama-cpp-python==0.3.36 >&2
echo "$py"
