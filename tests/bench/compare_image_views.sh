#!/usr/bin/env bash
# Loader throughput on one core: decode + two 224x224 VICReg views per photo-sized JPEG, ours
# (build/tests/bench/image_views_bench) against torchvision + PIL running the reference code's
# transforms (tests/bench/image_views_peer.py), alternately (ours, peer, ours, peer...) in one
# sitting; prints each round's images/s by the wall clock and per CPU second (the process's CPU
# time, which other work on a shared machine disturbs least) and the medians of the per-round
# ratios of both.
#   usage: tests/bench/compare_image_views.sh [ROUNDS=5] [BUILD_DIR=build] [DIR=data/image_bench] [SECONDS=4]
# The JPEG set: /usr/bin/python3 tests/bench/make_image_bench_set.py (needs python3-skimage).
# The peer needs Debian's python3-torch, python3-torchvision and python3-pil (/usr/bin/python3).
set -euo pipefail
rounds=${1:-5}
build=${2:-build}
dir=${3:-data/image_bench}
seconds=${4:-4}
here=$(cd "$(dirname "$0")" && pwd)
[ -x "$build/tests/bench/image_views_bench" ] || { echo "compare_image_views.sh: build $build/tests/bench/image_views_bench first (ninja -C $build)" >&2; exit 2; }
ls "$dir"/*.jpg > /dev/null 2>&1 || { echo "compare_image_views.sh: no JPEGs in $dir (run tests/bench/make_image_bench_set.py)" >&2; exit 2; }
# one core each: no OpenMP or BLAS threads on either side
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
# first touch of fresh memory is slow on these machines: both sides keep freed memory
export MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000 MALLOC_TOP_PAD_=268435456
fields() { sed -n 's/^RESULT //p' | /usr/bin/python3 -c "import json,sys; r=json.loads(sys.stdin.read()); print(r['images_per_s'], r['images_per_cpu_s'])"; }
ours=(); theirs=(); ours_cpu=(); theirs_cpu=()
for i in $(seq "$rounds"); do
  read -r o oc < <("$build/tests/bench/image_views_bench" "$dir" "$seconds" | fields)
  read -r t tc < <(/usr/bin/python3 "$here/image_views_peer.py" "$dir" "$seconds" | fields)
  ours+=("$o"); theirs+=("$t"); ours_cpu+=("$oc"); theirs_cpu+=("$tc")
  echo "round $i: ours $o images/s ($oc per CPU s), torchvision + PIL $t images/s ($tc per CPU s)"
done
/usr/bin/python3 - "${ours[*]}" "${theirs[*]}" "${ours_cpu[*]}" "${theirs_cpu[*]}" <<'PY'
import statistics, sys
o, t, oc, tc = (list(map(float, a.split())) for a in sys.argv[1:])
for label, a, b in (("wall clock", o, t), ("per CPU second", oc, tc)):
    ratios = [x / y for x, y in zip(a, b)]
    print(f"{label}: ours median {statistics.median(a):.1f} images/s, torchvision + PIL median "
          f"{statistics.median(b):.1f}; ratios {', '.join(f'{r:.2f}' for r in ratios)}; "
          f"median ratio {statistics.median(ratios):.2f}x")
PY
