#!/usr/bin/env bash
# Makes a GPU kit: the programs the GPU checks run, built here with CUDA, and what they need
# that a bare GPU machine lacks, for a machine that has a CUDA 13 driver and runtime, cuBLAS,
# cuDNN 9 and NCCL (PyTorch's nvidia-* packages bring them) but none of Debian's libraries and no
# way to fetch them:
#   KIT/bin   test_backend_parity, test_nccl, bench_step, vicreg (a release build with CUDA and
#             MPI, without oneDNN and FAISS)
#   KIT/lib   every shared library they load but the C library's own and CUDA's
#   KIT/data  Fashion-MNIST's first 4096 training and 1000 test images and labels (IDX, gzip)
# and KIT.tar.xz of it all (about 12 MB; the folder itself, 57 MB, would not fit beside the
# working tree in what travels to a GPU machine). There, tests/bench/gpu_bench.sh [ROUNDS] KIT
# unpacks it and runs everything from the kit (LD_LIBRARY_PATH: the kit's libraries, then the
# machine's CUDA libraries).
#   usage: tests/bench/gpu_kit.sh [KIT]      (default gpu-kit; git ignores /gpu-kit/ and
#          /gpu-kit.tar.xz)
set -euo pipefail
kit=${1:-gpu-kit}
cd "$(dirname "$0")/../.."
build=build-kit
# for any x86-64 host CPU of today's GPU machines (AVX2 and FMA), not this machine's
opts=(--buildtype=release -Dcuda=enabled -Donednn=disabled -Dfaiss=disabled -Dnative=false
      -Dc_args=-march=x86-64-v3 -Dcpp_args=-march=x86-64-v3)
if [ -d "$build" ]; then meson configure "$build" "${opts[@]}" >/dev/null
else meson setup "$build" "${opts[@]}" >/dev/null; fi
bins=(tests/test_backend_parity tests/test_nccl tests/bench/bench_step src/cli/vicreg)
ninja -C "$build" "${bins[@]}" >/dev/null
grep -q "VR_HAVE_NCCL 1" "$build/vr_config.h" || echo "gpu_kit: this build has no NCCL" >&2
rm -rf "$kit"
mkdir -p "$kit/bin" "$kit/lib" "$kit/data"
for b in "${bins[@]}"; do cp "$build/$b" "$kit/bin/"; done
# the libraries, by the name the programs ask for; the C library's family and CUDA's stay
skip='^(libc|libm|libmvec|libdl|libpthread|librt|libresolv|libutil|ld-linux-x86-64|linux-vdso|libcudart|libcublas|libcublasLt|libcudnn.*|libnccl)\.so'
for b in "$kit"/bin/*; do
  ldd "$b" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}'
done | sort -u | while read -r name path; do
  [[ $name =~ $skip ]] || cp -L "$path" "$kit/lib/$name"
done
missing=$(for b in "$kit"/bin/*; do LD_LIBRARY_PATH=$kit/lib ldd "$b"; done | grep "not found" || true)
[ -z "$missing" ] || { echo "gpu_kit: unresolved here: $missing" >&2; exit 1; }
/usr/bin/python3 - "$kit/data" <<'PY'
import gzip, struct, sys
src, out = "/usr/share/datasets/fashion-mnist", sys.argv[1]
for split, keep in (("train", 4096), ("t10k", 1000)):
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        raw = gzip.open(f"{src}/{split}-{kind}.gz").read()
        dims = raw[3]
        shape = list(struct.unpack(">" + "I" * dims, raw[4:4 + 4 * dims]))
        row = 1
        for d in shape[1:]:
            row *= d
        shape[0] = keep
        head = raw[:4] + struct.pack(">" + "I" * dims, *shape)
        body = raw[4 + 4 * dims:4 + 4 * dims + keep * row]
        with gzip.open(f"{out}/{split}-{kind}.gz", "wb") as f:
            f.write(head + body)
PY
tar cJf "$kit.tar.xz" "$kit"
echo "gpu_kit: $kit ($(du -sh "$kit" | cut -f1)): $(ls "$kit/bin" | tr '\n' ' ')and $(ls "$kit/lib" | wc -l) libraries; $kit.tar.xz $(du -sh "$kit.tar.xz" | cut -f1)"
echo "on the GPU machine: bash tests/bench/gpu_bench.sh 1 $kit (it unpacks $kit.tar.xz)"
