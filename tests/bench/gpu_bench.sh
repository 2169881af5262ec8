#!/usr/bin/env bash
# The GPU comparison in one command: builds the toolkit with CUDA, runs the backend parity suite
# (it must not skip), the NCCL checks on one rank (test_nccl; and, where the Fashion-MNIST IDX
# files are found, `vicreg train` on cuda through NCCL against the same run without it: every
# metrics line's losses must agree), then ResNet-50 224x224 VICReg training
# steps at batch 64 and 128 in float32, TF32 and bfloat16, ours (bench_step gpu) and PyTorch's
# (torch_gpu_peer.py) in alternating runs on the same GPU, and prints a table of pairs/s
# (images/s; each image gives two views), the device memory each run took and the ratios of
# the medians. Before all that, one step of ours at batch 2: where it fails (libraries, driver,
# CPU, or the backend itself), the checks still run, to say why, but the table and the profile
# do not spend device time on the PyTorch side alone.
# Every run has a time limit (below), so a hang costs minutes, not the session.
#
#   usage: tests/bench/gpu_bench.sh [ROUNDS] [BUILD_DIR|KIT]  (defaults: 3, build-gpu)
# With a kit made by tests/bench/gpu_kit.sh (for a machine without Debian's libraries; KIT or
# KIT.tar.xz, unpacked here) nothing is built: the kit's programs run with its libraries, then the machine's CUDA libraries
# (PyTorch's nvidia-* packages, /usr/local/cuda), on the kit's Fashion-MNIST subset.
#   environment: PYTHON (a python3 whose torch sees the GPU), BATCHES ("64 128"),
#                PRECISIONS ("fp32 tf32 bf16"), STEPS (20), WARMUP (5), SKIP_PARITY=1,
#                SKIP_NCCL=1, SKIP_TABLE=1, FASHION_MNIST (the IDX files' folder,
#                /usr/share/datasets/fashion-mnist or data/fashion-mnist),
#                SANITIZE=1 (the parity suite once more under compute-sanitizer's memcheck: the
#                first out-of-bounds or misaligned accesses, with their kernels),
#                PROFILE=PRECISION:BATCH (e.g. bf16:128: after the table, one step of each side
#                after 2 of warm-up, its kernels timed one by one by Nsight Compute (ncu, the
#                NVTX range "step" only), and each side's top 25 kernels by GPU time)
# Logs of every run, results_B.jsonl per set of batches B and the profiles go to
# BUILD_DIR/gpu-bench/ (training checkpoints are deleted once compared, so the folder stays
# small enough to bring back). Needs meson, ninja, a C compiler, the CUDA toolkit with cuDNN
# and the libraries of .ci/deps; PyTorch with CUDA for the peer.
set -euo pipefail
rounds=${1:-3}
build=${2:-build-gpu}
cd "$(dirname "$0")/../.."
here=tests/bench
batches=${BATCHES:-64 128}
precisions=${PRECISIONS:-fp32 tf32 bf16}
steps=${STEPS:-20}
warmup=${WARMUP:-5}

py=${PYTHON:-}
if [ -z "$py" ]; then
  for cand in python3 /usr/bin/python3; do
    if command -v "$cand" >/dev/null && "$cand" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
      py=$cand
      break
    fi
  done
fi
[ -n "$py" ] || { echo "gpu_bench: no python3 whose torch sees a CUDA device (set PYTHON=)" >&2; exit 2; }

if [ ! -d "$build" ] && [ -f "$build.tar.xz" ]; then # a packed kit: Python's tarfile needs no xz
  "$py" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall()' "$build.tar.xz"
fi
# ours: the kit's programs with the kit's libraries first (only they: torch keeps the machine's)
ours=()
if [ -x "$build/bin/bench_step" ]; then
  echo "== kit ($build)"
  libs=$build/lib
  for d in $("$py" - <<'PY'
import glob, os
try:
    import nvidia
    roots = list(nvidia.__path__)
except ImportError:
    roots = []
dirs = {os.path.dirname(f) for r in roots for f in glob.glob(os.path.join(r, "**", "lib*.so*"), recursive=True)}
print("\n".join(sorted(dirs)))
PY
  ) /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
    [ -d "$d" ] && libs=$libs:$d
  done
  ours=(env "LD_LIBRARY_PATH=$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}")
  bin=$build/bin
  parity=$bin/test_backend_parity nccl=$bin/test_nccl bench=$bin/bench_step cli=$bin/vicreg
  FASHION_MNIST=${FASHION_MNIST:-$build/data}
  for b in "$bin"/*; do
    if "${ours[@]}" ldd "$b" | grep -q "not found"; then
      echo "gpu_bench: $b lacks:"; "${ours[@]}" ldd "$b" | grep "not found" || true
    fi
  done
else
  for tool in meson ninja nvcc; do
    command -v "$tool" >/dev/null || { echo "gpu_bench: $tool not found" >&2; exit 2; }
  done
  echo "== build ($build)"
  [ -d "$build" ] || meson setup "$build" --buildtype=release -Dcuda=enabled
  ninja -C "$build" tests/bench/bench_step tests/test_backend_parity tests/test_nccl src/cli/vicreg
  parity=$build/tests/test_backend_parity nccl=$build/tests/test_nccl
  bench=$build/tests/bench/bench_step cli=$build/src/cli/vicreg
fi
# a program under a time limit (--foreground: it stays in the script's process group, so a
# limit put on the whole script reaches it too): limited SECONDS PROGRAM ARGS...
limited() { local s=$1; shift; timeout --foreground -k 10 "$s" "$@"; }
# one of our programs, with the kit's libraries: ours_in SECONDS PROGRAM ARGS...
ours_in() { local s=$1; shift; limited "$s" "${ours[@]}" "$@"; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true
"$py" -c "import torch; print('torch', torch.__version__, 'cuDNN', torch.backends.cudnn.version(), torch.cuda.get_device_name(0))"

logs=$build/gpu-bench
mkdir -p "$logs"
echo "== smoke: one step of ours at batch 2"
stepped=1
if ours_in 180 "$bench" gpu --backend cuda --batch 2 --warmup 0 --steps 1 >"$logs/smoke.log" 2>&1; then
  echo "smoke: $(grep -o 'step  0.*' "$logs/smoke.log" | head -n 1)"
else
  stepped=0
  tail -n 5 "$logs/smoke.log"
  echo "smoke: FAILED (the log: $logs/smoke.log); the table and the profile are skipped, the checks go on"
fi

if [ "${SKIP_PARITY:-0}" != 1 ]; then
  echo "== parity: every op and a training step on cuda, cuda-tf32, cuda-bf16 against cpu"
  if VR_PARITY_REQUIRE_CUDA=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-8} ours_in 420 "$parity" \
       >"$logs/parity.log" 2>&1; then
    echo "parity: passed ($logs/parity.log)"
  else
    echo "parity: FAILED (status $?); the failures:"
    { grep -E -A3 "FAILED|no CUDA|Error|error|fail" "$logs/parity.log" || tail -n 20 "$logs/parity.log"; } |
      head -n 60 || true
    echo "(whole log: $logs/parity.log; the benchmark goes on)"
  fi
  grep -E "^Run Summary|asserts|tests " "$logs/parity.log" | head -n 4 || true
fi
if [ "${SANITIZE:-0}" = 1 ]; then
  san=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null | head -n 1 || true)
  if [ -z "$san" ]; then
    echo "== sanitize: no compute-sanitizer on this machine"
  else
    echo "== sanitize: the parity suite under $san (memcheck)"
    VR_PARITY_REQUIRE_CUDA=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-8} limited 420 "$san" \
      --tool memcheck --print-limit 20 "${ours[@]}" "$parity" >"$logs/sanitize.log" 2>&1 || true
    { grep -E "^========= (Invalid|Misaligned|Program hit|ERROR SUMMARY)|^=========     at " \
        "$logs/sanitize.log" || tail -n 5 "$logs/sanitize.log"; } | head -n 40 || true
  fi
fi

if [ "${SKIP_NCCL:-0}" != 1 ]; then
  echo "== NCCL on one rank (a process without a launcher: no MPI runtime needed)"
  if ours_in 180 "$nccl" >"$logs/nccl.log" 2>&1; then echo "test_nccl: passed"; else
    echo "test_nccl: FAILED"; tail -n 20 "$logs/nccl.log"
  fi
  grep -h "skipping" "$logs/nccl.log" || true
  fm=${FASHION_MNIST:-}
  for cand in /usr/share/datasets/fashion-mnist data/fashion-mnist; do
    [ -z "$fm" ] && [ -f "$cand/train-images-idx3-ubyte.gz" ] && fm=$cand
  done
  if [ -n "$fm" ]; then
    sets=(--set "data.train_images=$fm/train-images-idx3-ubyte.gz"
          --set "data.train_labels=$fm/train-labels-idx1-ubyte.gz"
          --set "data.test_images=$fm/t10k-images-idx3-ubyte.gz"
          --set "data.test_labels=$fm/t10k-labels-idx1-ubyte.gz"
          --set data.train_limit=2048 --set train.log_every=1 --set train.backend=cuda
          --set dist.timeout_s=60
          --set eval.train_limit=1000 --set eval.test_limit=500 --set eval.linear=none)
    for comm in single nccl; do
      ours_in 300 "$cli" train recipes/fashion_mnist_quick.ini "${sets[@]}" \
        --set dist.comm=$comm --set train.run_dir="$logs/train_$comm" >"$logs/train_$comm.log" 2>&1 ||
        { echo "train on cuda, comm $comm: FAILED"; tail -n 5 "$logs/train_$comm.log"; }
    done
    [ -s "$logs/train_single/metrics.jsonl" ] && [ -s "$logs/train_nccl/metrics.jsonl" ] &&
    "$py" - "$logs/train_single/metrics.jsonl" "$logs/train_nccl/metrics.jsonl" <<'PY' || true
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
worst = max(abs(x[k] - y[k]) / max(abs(y[k]), 1e-12) for x, y in zip(a, b)
            for k in ("loss", "invariance", "variance", "covariance"))
print(f"NCCL, one rank, against no comm: {len(b)} of {len(a)} metrics lines, largest relative "
      f"loss-term difference {worst:.3g} ({'same' if len(a) == len(b) and worst <= 1e-5 else 'DIFFERENT'})")
PY
    grep -h "k-NN\|knn" "$logs/train_single.log" | tail -n 1 || true
    find "$logs"/train_single "$logs"/train_nccl -name '*.safetensors*' -delete 2>/dev/null || true
  else
    echo "no Fashion-MNIST IDX files (FASHION_MNIST=): the training comparison is skipped"
  fi
fi

backend_of() { case $1 in fp32) echo cuda ;; tf32) echo cuda-tf32 ;; bf16) echo cuda-bf16 ;; esac; }
# the RESULT line, with C's nan and inf as Python's json reads them
result() { sed -n 's/^RESULT //p' "$1" | tail -n 1 | sed -E 's/: -?nan\b/: NaN/g; s/: inf\b/: Infinity/g'; }
brief() { "$py" -c 'import json,sys; r=json.load(sys.stdin); print(r["pairs_per_s"], "pairs/s,", r["peak_mem_MB"], "MB")'; }
if [ $stepped = 0 ]; then
  echo "== no table and no profile: our step did not run (smoke above)"
  exit 2
fi
if [ "${SKIP_TABLE:-0}" != 1 ]; then
  results=$logs/results_$(echo $batches | tr ' ' -).jsonl
  : >"$results"
  echo "== steps: $steps timed after $warmup warm-up, $rounds alternating rounds per row"
  for b in $batches; do
    for p in $precisions; do
      for r in $(seq "$rounds"); do
        log=$logs/ours_b${b}_${p}_$r.log
        if ours_in 300 "$bench" gpu --backend "$(backend_of "$p")" --batch "$b" \
             --warmup "$warmup" --steps "$steps" >"$log" 2>&1 && [ -n "$(result "$log")" ]; then
          result "$log" >>"$results"
          echo "b$b $p round $r ours : $(result "$log" | brief)"
        else
          echo "b$b $p round $r ours : failed, see $log"; tail -n 3 "$log"
        fi
        log=$logs/torch_b${b}_${p}_$r.log
        if limited 300 "$py" "$here/torch_gpu_peer.py" --precision "$p" --batch "$b" \
             --warmup "$warmup" --steps "$steps" >"$log" 2>&1 && [ -n "$(result "$log")" ]; then
          result "$log" >>"$results"
          echo "b$b $p round $r torch: $(result "$log" | brief)"
        else
          echo "b$b $p round $r torch: failed, see $log"; tail -n 3 "$log"
        fi
      done
    done
  done

  echo "== table (medians over rounds; ratio = ours / torch)"
  "$py" - "$results" <<'PY' || echo "gpu_bench: no table (the results: $results)"
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    rows.setdefault(r["config"], {}).setdefault(r["side"], []).append(r)
gpu = next((r["gpu"] for v in rows.values() for r in v.get("torch", [])), "?")
print(f"GPU: {gpu}")
print(f"{'config':34s} {'ours pairs/s':>13s} {'torch pairs/s':>14s} {'ratio':>6s} "
      f"{'ours MB':>9s} {'torch MB':>9s} {'reserved':>9s}")
for cfg in sorted(rows, key=lambda c: (int(c.split("_b")[1].split("_")[0]), c)):
    o, t = rows[cfg].get("ours", []), rows[cfg].get("torch", [])
    med = lambda v, k: statistics.median(x[k] for x in v) if v else float("nan")
    op, tp = med(o, "pairs_per_s"), med(t, "pairs_per_s")
    ratio = op / tp if o and t else float("nan")
    print(f"{cfg:34s} {op:13.1f} {tp:14.1f} {ratio:6.2f} {med(o, 'peak_mem_MB'):9.0f} "
          f"{med(t, 'peak_mem_MB'):9.0f} {med(t, 'peak_reserved_MB'):9.0f}")
print("MB: device memory the run took on each side (cudaMemGetInfo after the steps against before"
      " the model, once the CUDA context exists); reserved: torch.cuda.max_memory_reserved()")
PY
fi

if [ -n "${PROFILE:-}" ]; then
  ncu=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -n 1 || true)
  p=${PROFILE%%:*} b=${PROFILE##*:}
  if [ -z "$ncu" ]; then
    echo "== profile: no ncu on this machine"
  else
    echo "== profile: $p, batch $b, one step after 2 of warm-up, each kernel timed by $ncu"
    for side in ours torch; do
      rep=$logs/profile_${side}_${p}_b$b
      if [ $side = ours ]; then
        run=("$bench" gpu --backend "$(backend_of "$p")" --batch "$b" --warmup 2 --steps 1)
        pre=("${ours[@]}") # after the tool: ncu itself runs with the machine's libraries
      else
        run=("$py" "$here/torch_gpu_peer.py" --precision "$p" --batch "$b" --warmup 2 --steps 1)
        pre=()
      fi
      limited 300 "$ncu" --nvtx --nvtx-include "step" --metrics gpu__time_duration.sum \
        --clock-control none --csv --print-units base --log-file "$rep.csv" "${pre[@]}" "${run[@]}" \
        >"$rep.log" 2>&1 || { echo "$side: ncu failed (status $?), see $rep.log"; tail -n 3 "$rep.log"; continue; }
      "$py" - "$rep.csv" "$side" <<'PY' || echo "$side: no kernel times in $rep.csv"
import csv, sys
lines = [l for l in open(sys.argv[1]) if l.startswith('"')]
per = {}
for r in csv.DictReader(lines):
    if r.get("Metric Name") != "gpu__time_duration.sum":
        continue
    name = r["Kernel Name"]
    t, n = per.get(name, (0.0, 0))
    per[name] = (t + float(r["Metric Value"].replace(",", "")), n + 1)
total = sum(t for t, _ in per.values())
print(f"{sys.argv[2]}: {sum(n for _, n in per.values())} kernels in one step, {total / 1e6:.2f} ms "
      f"of GPU time (each kernel alone); the top 25 by time:")
for name, (t, n) in sorted(per.items(), key=lambda kv: -kv[1][0])[:25]:
    print(f"  {t / 1e6:8.3f} ms {n:5d}x  {name[:110]}")
PY
    done
  fi
fi
