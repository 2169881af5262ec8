#!/usr/bin/env bash
# Quickstart: VICReg on Fashion-MNIST in about 12 minutes on two idle CPU cores.
#
# Installs what is missing (.ci/deps, as root or through sudo), builds a release build in
# build/, measures the k-NN accuracy of an untrained encoder, trains one with
# recipes/fashion_mnist_quick.ini, and prints the two side by side. Each run gets a directory
# of its own under runs/, so running this again never overwrites an earlier result.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -eq 0 ]; then
  bash .ci/deps
elif command -v sudo >/dev/null; then
  sudo bash .ci/deps
else
  bash .ci/deps # succeeds without root when nothing is missing
fi

if [ ! -f build/build.ninja ]; then
  meson setup build --buildtype=release
fi
ninja -C build

vicreg=build/src/cli/vicreg
recipe=recipes/fashion_mnist_quick.ini
run="runs/quickstart-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$run"

echo "== k-NN of an untrained encoder (the baseline)"
"$vicreg" eval knn --random-init "$recipe" --json "$run/eval_random_init.json"

echo "== training ($recipe -> $run)"
start=$(date +%s)
"$vicreg" train "$recipe" --set train.run_dir="$run"
took=$(( $(date +%s) - start ))

# one-line JSON objects: pull a number out by its key
field() { sed -n "s/.*\"$2\": *\([0-9.]*\).*/\1/p" "$1"; }
pct() { awk -v x="$1" 'BEGIN { printf "%6.2f%%", 100 * x }'; }

echo
echo "== Fashion-MNIST test split, weighted k-NN (k $(field "$run/eval.json" k)," \
     "$(field "$run/eval.json" test_samples) test / $(field "$run/eval.json" train_samples) train images)"
printf '  %-14s %8s %8s\n' "encoder" "top-1" "top-5"
printf '  %-14s %8s %8s\n' "random init" "$(pct "$(field "$run/eval_random_init.json" top1)")" \
  "$(pct "$(field "$run/eval_random_init.json" top5)")"
printf '  %-14s %8s %8s\n' "VICReg" "$(pct "$(field "$run/eval.json" top1)")" \
  "$(pct "$(field "$run/eval.json" top5)")"
echo "  training and evaluation took ${took} s; metrics, checkpoint and recipe are in $run/"
