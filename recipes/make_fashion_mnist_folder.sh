#!/usr/bin/env bash
# Fashion-MNIST as an ImageFolder of JPEGs, the data of recipes/fashion_mnist_resnet18.ini.
#
# usage: bash recipes/make_fashion_mnist_folder.sh OUT_DIR
#
# Reads Debian's dataset-fashion-mnist (/usr/share/datasets/fashion-mnist, installed by
# .ci/deps) and writes
#   OUT_DIR/train/<k>-<class>/<index>.jpg   60000 images, 6000 per class
#   OUT_DIR/test/<k>-<class>/<index>.jpg    10000 images, 1000 per class
# 28 x 28 grayscale JPEGs at quality 95 (about 1 KB each), classes 0-tshirt-top, 1-trouser,
# 2-pullover, 3-dress, 4-coat, 5-sandal, 6-shirt, 7-sneaker, 8-bag, 9-ankle-boot: bytewise order
# keeps Fashion-MNIST's labels. <index> is the image's position in the IDX file. The JPEGs come
# from build/recipes/make_image_folder (built with the project: ninja -C build); each split is
# written under a temporary name and renamed when complete. Takes about 10 s.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -ne 1 ]; then
  echo "usage: bash $0 OUT_DIR" >&2
  exit 2
fi
out=$1
src=/usr/share/datasets/fashion-mnist
tool=build/recipes/make_image_folder
classes=tshirt-top,trouser,pullover,dress,coat,sandal,shirt,sneaker,bag,ankle-boot

[ -f "$src/train-images-idx3-ubyte.gz" ] || { echo "$src is missing: install dataset-fashion-mnist (bash .ci/deps)" >&2; exit 1; }
[ -x "$tool" ] || { echo "$tool is missing: build the project first (meson setup build && ninja -C build)" >&2; exit 1; }
mkdir -p "$out"
for split in train test; do
  prefix=$split
  [ "$split" = test ] && prefix=t10k
  if [ -d "$out/$split" ]; then
    echo "$out/$split exists; left as it is"
    continue
  fi
  rm -rf "$out/$split.partial"
  "$tool" "$src/$prefix-images-idx3-ubyte.gz" "$src/$prefix-labels-idx1-ubyte.gz" "$out/$split" --classes "$classes"
done
