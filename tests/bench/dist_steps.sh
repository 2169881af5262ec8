#!/usr/bin/env bash
# Training speed of a data-parallel run against one process on the same cores: the
# Fashion-MNIST quick recipe (ResNet-18 widths 32..256, expander 256-1024-1024-1024, global batch
# 128), 12 steps per run, as 1 rank x 2 threads and as mpirun -np 2 x 1 thread, alternately
# (A B A B ...). Prints each run's median pairs/s over steps 3..12 and the medians' ratio.
# Usage: tests/bench/dist_steps.sh [BUILD_DIR] [ROUNDS]
set -euo pipefail
build=${1:-build}
rounds=${2:-3}
vicreg=$build/src/cli/vicreg
out=$(mktemp -d)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
sets=(--set data.train_limit=1536 --set train.epochs=1 --set train.log_every=1
      --set train.checkpoint_every=0 --set eval.train_limit=100 --set eval.test_limit=50)
rate() { # median samples_per_s of steps 3.. in a metrics file
  /usr/bin/python3 -c 'import json,statistics,sys
r=[json.loads(l)["samples_per_s"] for l in open(sys.argv[1]) if json.loads(l)["step"]>=3]
print("%.1f" % statistics.median(r))' "$1"
}
one=() two=()
for i in $(seq "$rounds"); do
  "$vicreg" train recipes/fashion_mnist_quick.ini "${sets[@]}" --set train.threads=2 \
    --set train.run_dir="$out/one$i" > /dev/null 2>&1
  one+=("$(rate "$out/one$i/metrics.jsonl")")
  mpirun -np 2 --oversubscribe "$vicreg" train recipes/fashion_mnist_quick.ini "${sets[@]}" \
    --set train.threads=1 --set train.run_dir="$out/two$i" > /dev/null 2>&1
  two+=("$(rate "$out/two$i/metrics.jsonl")")
  echo "round $i: 1 rank x 2 threads ${one[-1]} pairs/s; 2 ranks x 1 thread ${two[-1]} pairs/s"
done
/usr/bin/python3 -c 'import statistics,sys
a=[float(x) for x in sys.argv[1].split()]; b=[float(x) for x in sys.argv[2].split()]
print("median: 1 rank x 2 threads %.1f pairs/s (%.2f steps/s), 2 ranks x 1 thread %.1f pairs/s (%.2f steps/s); ratio %.2f"
      % (statistics.median(a), statistics.median(a)/128, statistics.median(b), statistics.median(b)/128,
         statistics.median(b)/statistics.median(a)))' "${one[*]}" "${two[*]}"
rm -rf "$out"
