#!/usr/bin/env bash
# Runs the exact-search benchmark and the NumPy/PyTorch brute force alternately (ours, theirs,
# ours, theirs...) on the same threads and prints each run's queries/s and the medians.
#   usage: tests/bench/compare_search.sh [ROUNDS] [THREADS] [SECONDS] [BUILD_DIR]
# Needs Debian's python3-numpy and python3-torch (/usr/bin/python3).
set -euo pipefail
rounds=${1:-3}
threads=${2:-2}
seconds=${3:-3}
build=${4:-build}
here=$(cd "$(dirname "$0")" && pwd)
[ -x "$build/tests/bench/search_bench" ] || { echo "compare_search.sh: build $build/tests/bench/search_bench first (ninja -C $build)" >&2; exit 2; }
export OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads
result() { sed -n 's/^RESULT //p'; }
runs=()
for i in $(seq "$rounds"); do
  ours=$("$build/tests/bench/search_bench" "$threads" "$seconds" | result)
  echo "round $i ours  : $ours"
  theirs=$(/usr/bin/python3 "$here/search_bench.py" "$threads" "$seconds" | result)
  echo "round $i numpy/torch: $theirs"
  runs+=("$ours" "$theirs")
done
/usr/bin/python3 - "${runs[@]}" <<'PY'
import json, statistics, sys
rs = [json.loads(a) for a in sys.argv[1:]]
for key, name in (("qps_batch1", "batch of 1"), ("qps_batch1000", "batch of 1000")):
    cols = {"ours": [r[key] for r in rs if key in r]}
    for lib in ("numpy", "torch"):
        cols[lib] = [r[f"{lib}_{key}"] for r in rs if f"{lib}_{key}" in r]
    print(f"{name}: median queries/s " + ", ".join(f"{k} {statistics.median(v):.1f}" for k, v in cols.items()))
PY
