#!/usr/bin/env bash
# Training speed of data-parallel runs on the Fashion-MNIST quick recipe (ResNet-18 widths
# 32..256, expander 256-1024-1024-1024, global batch 128), 12 steps per run, two set-ups run
# alternately (A B A B ...); prints each run's median pairs/s over steps 3..12 and the medians'
# ratio B / A.
#   ranks:   A = 1 rank x 2 threads, B = mpirun -np 2 x 1 thread
#   overlap: both mpirun -np 2 x 1 thread; A = the gradients summed in one bucket per branch
#            started after the backward ([dist] bucket_mb=1000), B = 1 MB buckets started
#            during the backward; also the median wait for the sums after the backward
# Usage: tests/bench/dist_steps.sh [BUILD_DIR] [ROUNDS] [ranks|overlap]
set -euo pipefail
build=${1:-build}
rounds=${2:-3}
mode=${3:-ranks}
vicreg=$build/src/cli/vicreg
out=$(mktemp -d)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
sets=(--set data.train_limit=1536 --set train.epochs=1 --set train.log_every=1
      --set train.checkpoint_every=0 --set eval.train_limit=100 --set eval.test_limit=50)
case "$mode" in
  ranks) names=("1 rank x 2 threads" "2 ranks x 1 thread") ;;
  overlap) names=("one bucket after the backward" "1 MB buckets during the backward") ;;
  *) echo "dist_steps.sh: mode '$mode' is not ranks or overlap" >&2; exit 2 ;;
esac
run() { # run set-up $1 (0: A, 1: B) into $2
  if [ "$mode" = ranks ] && [ "$1" = 0 ]; then
    "$vicreg" train recipes/fashion_mnist_quick.ini "${sets[@]}" --set train.threads=2 \
      --set train.run_dir="$2" > /dev/null 2>&1
    return
  fi
  local mb=25
  [ "$mode" = overlap ] && mb=$([ "$1" = 0 ] && echo 1000 || echo 1)
  mpirun -np 2 --oversubscribe "$vicreg" train recipes/fashion_mnist_quick.ini "${sets[@]}" \
    --set train.threads=1 --set dist.bucket_mb="$mb" --set train.run_dir="$2" > /dev/null 2>&1
}
stat() { # median of key $2 over steps 3.. in a metrics file $1
  /usr/bin/python3 -c 'import json,statistics,sys
r=[json.loads(l) for l in open(sys.argv[1])]
print("%.4g" % statistics.median(x[sys.argv[2]] for x in r if x["step"]>=3))' "$1" "$2"
}
a=() b=() wa=() wb=()
for i in $(seq "$rounds"); do
  run 0 "$out/a$i"
  a+=("$(stat "$out/a$i/metrics.jsonl" samples_per_s)")
  run 1 "$out/b$i"
  b+=("$(stat "$out/b$i/metrics.jsonl" samples_per_s)")
  line="round $i: ${names[0]} ${a[-1]} pairs/s; ${names[1]} ${b[-1]} pairs/s"
  if [ "$mode" = overlap ]; then
    wa+=("$(stat "$out/a$i/metrics.jsonl" comm_wait_s)")
    wb+=("$(stat "$out/b$i/metrics.jsonl" comm_wait_s)")
    line="$line; wait for the sums ${wa[-1]} s vs ${wb[-1]} s"
  fi
  echo "$line"
done
/usr/bin/python3 -c 'import statistics,sys
a=[float(x) for x in sys.argv[1].split()]; b=[float(x) for x in sys.argv[2].split()]
ma, mb = statistics.median(a), statistics.median(b)
print("median: %s %.1f pairs/s (%.2f steps/s), %s %.1f pairs/s (%.2f steps/s); ratio %.2f"
      % (sys.argv[3], ma, ma/128, sys.argv[4], mb, mb/128, mb/ma))
if sys.argv[5]:
    wa=[float(x) for x in sys.argv[5].split()]; wb=[float(x) for x in sys.argv[6].split()]
    print("median wait for the sums after the backward: %.4f s vs %.4f s"
          % (statistics.median(wa), statistics.median(wb)))' \
  "${a[*]}" "${b[*]}" "${names[0]}" "${names[1]}" "${wa[*]:-}" "${wb[*]:-}"
rm -rf "$out"
