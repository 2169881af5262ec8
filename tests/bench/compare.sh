#!/usr/bin/env bash
# Runs our training-step benchmark and the PyTorch peer alternately (ours, peer, ours, peer...)
# in one sitting and prints each run's pairs/s and peak RSS and the ratio of the medians.
#   usage: tests/bench/compare.sh a|b|c [ROUNDS] [BUILD_DIR]
# The peer prints RESULT lines (config c two: the last has every field). It needs Debian's python3-torch and python3-torchvision (/usr/bin/python3).
set -euo pipefail
cfg=${1:-a}
rounds=${2:-3}
build=${3:-build}
here=$(cd "$(dirname "$0")" && pwd)
peer=${PEER:-$here/../../../shared/bench/torch_peer.py}
[ -f "$peer" ] || { echo "compare.sh: peer not found at $peer (set PEER=)" >&2; exit 2; }
[ -x "$build/tests/bench/bench_step" ] || { echo "compare.sh: build $build/tests/bench/bench_step first (ninja -C $build)" >&2; exit 2; }
# first touch of fresh memory is slow on these machines: both sides keep freed memory
export MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000 MALLOC_TOP_PAD_=1073741824
field() { sed -n 's/^RESULT //p' | tail -n 1 | /usr/bin/python3 -c "import json,sys; r=json.loads(sys.stdin.read()); print(r['pairs_per_s'], r['peak_rss_MB'])"; }
ours=(); theirs=(); ours_rss=(); theirs_rss=()
for i in $(seq "$rounds"); do
  read -r p r < <(OMP_NUM_THREADS=2 "$build/tests/bench/bench_step" "$cfg" --threads 2 2>/dev/null | field)
  ours+=("$p"); ours_rss+=("$r")
  echo "round $i ours : $p pairs/s, peak RSS $r MB"
  read -r p r < <(/usr/bin/python3 "$peer" "$cfg" --threads 2 2>/dev/null | field)
  theirs+=("$p"); theirs_rss+=("$r")
  echo "round $i peer : $p pairs/s, peak RSS $r MB"
done
/usr/bin/python3 - "$cfg" "${ours[*]}" "${theirs[*]}" "${ours_rss[*]}" "${theirs_rss[*]}" <<'PY'
import statistics, sys
cfg, o, t, orss, trss = sys.argv[1], *[list(map(float, a.split())) for a in sys.argv[2:]]
mo, mt = statistics.median(o), statistics.median(t)
print(f"config {cfg}: ours median {mo:.2f} pairs/s, peer median {mt:.2f} pairs/s, ratio {mo / mt:.2f}x; "
      f"peak RSS ours {statistics.median(orss):.0f} MB, peer {statistics.median(trss):.0f} MB")
PY
