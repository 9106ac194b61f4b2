#!/usr/bin/env bash
# Checks the one-way layer rule of DEVELOPERS.md: a file of layer X includes "aquakv/Y/..."
# only when Y is X or a layer below X. Prints each violation; exits 1 if there is any.
set -euo pipefail
cd "$(dirname "$0")/.."
rank() {
  case "$1" in
    util) echo 0 ;; ops) echo 1 ;; quant) echo 2 ;; kv) echo 3 ;; engine) echo 4 ;;
    calib|eval) echo 5 ;; *) echo 99 ;;
  esac
}
bad=0
while IFS= read -r f; do
  layer=$(echo "$f" | sed -E 's#^(include/aquakv|src)/([a-z_]+)/.*#\2#')
  r=$(rank "$layer")
  [[ "$r" == 99 ]] && { echo "unknown layer '$layer' for $f"; bad=1; continue; }
  while IFS= read -r inc; do
    dep=$(echo "$inc" | sed -E 's#.*"aquakv/([a-z_]+)/.*#\1#')
    d=$(rank "$dep")
    if (( d > r )); then echo "$f: layer '$layer' includes higher layer '$dep': $inc"; bad=1; fi
  done < <(grep -E '^#include "aquakv/' "$f" || true)
done < <(find include/aquakv src -name '*.h' -o -name '*.cpp' | sort)
exit $bad
