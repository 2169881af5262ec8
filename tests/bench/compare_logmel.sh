#!/usr/bin/env bash
# Times the default log-mel front end (64 one-second 16 kHz clips -> (64, 64, 101) in [0, 1])
# against the PyTorch peer's LogMel, alternately (ours, peer, ours, peer...) in one sitting, and
# prints the ratio of the medians, and of the fastest runs (other processes on a shared machine
# only ever add time, so the fastest runs are the steadiest figure when it is busy).
#   usage: tests/bench/compare_logmel.sh [ROUNDS] [BUILD_DIR] [THREADS]
# Ours: build/tests/bench/bench_logmel (median of 10 runs after 3 warm-ups). The peer: its
# LogMel module imported from shared/bench/torch_peer.py and timed alone on the same shape of
# input (0.1 * N(0, 1), as its config c), 3 warm-ups then the median of 10 runs, with
# torch.set_num_threads(THREADS); this is the "[c] log-mel front end" figure of
# `torch_peer.py c` without the training steps around it. Needs Debian's python3-torch
# (/usr/bin/python3).
set -euo pipefail
rounds=${1:-3}
build=${2:-build}
threads=${3:-2}
here=$(cd "$(dirname "$0")" && pwd)
peer=${PEER:-$here/../../../shared/bench/torch_peer.py}
[ -f "$peer" ] || { echo "compare_logmel.sh: peer not found at $peer (set PEER=)" >&2; exit 2; }
[ -x "$build/tests/bench/bench_logmel" ] || { echo "compare_logmel.sh: build $build/tests/bench/bench_logmel first (ninja -C $build)" >&2; exit 2; }
# first touch of fresh memory is slow on these machines: both sides keep freed memory
export MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000 MALLOC_TOP_PAD_=1073741824
fields() { sed -n 's/^RESULT //p' | /usr/bin/python3 -c "import json,sys; r=json.loads(sys.stdin.read()); print(r['$1'], r['$2'])"; }
peer_logmel() {
  /usr/bin/python3 - "$peer" "$threads" <<'PY'
import json, os, statistics, sys, time
import torch
sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[1])))
import torch_peer
torch.set_num_threads(int(sys.argv[2]))
spec = torch_peer.LogMel()
w = torch.randn(64, 16000, generator=torch.Generator().manual_seed(0)) * 0.1
for _ in range(3):
    s = spec(w)
ts = []
for _ in range(10):
    t0 = time.perf_counter(); s = spec(w); ts.append(time.perf_counter() - t0)
assert tuple(s.shape) == (64, 64, 101)
print("RESULT " + json.dumps({"logmel_ms": round(statistics.median(ts) * 1e3, 3),
                             "min_ms": round(min(ts) * 1e3, 3)}))
PY
}
ours=(); theirs=(); ours_min=(); theirs_min=()
for i in $(seq "$rounds"); do
  read -r o m < <(OMP_NUM_THREADS=$threads "$build/tests/bench/bench_logmel" "$threads" 10 | fields median_ms min_ms)
  ours+=("$o"); ours_min+=("$m")
  echo "round $i ours : median $o ms, fastest $m ms per batch of 64"
  read -r t m < <(peer_logmel | fields logmel_ms min_ms)
  theirs+=("$t"); theirs_min+=("$m")
  echo "round $i peer : median $t ms, fastest $m ms per batch of 64"
done
/usr/bin/python3 - "$threads" "${ours[*]}" "${theirs[*]}" "${ours_min[*]}" "${theirs_min[*]}" <<'PY'
import statistics, sys
threads, o, t, omin, tmin = sys.argv[1], *[list(map(float, a.split())) for a in sys.argv[2:]]
mo, mt = statistics.median(o), statistics.median(t)
fo, ft = min(omin), min(tmin)
print(f"log-mel of 64 x 1 s, {threads} threads: ours median {mo:.2f} ms, peer median {mt:.2f} ms, "
      f"ours {mt / mo:.2f}x faster; fastest runs ours {fo:.2f} ms, peer {ft:.2f} ms, {ft / fo:.2f}x")
PY
