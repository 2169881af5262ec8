#!/usr/bin/env bash
# Runs the libFuzzer targets of the readers for a set time each.
#
#   tests/fuzz/run.sh [-j N] [-o SUMMARY] [SECONDS_PER_TARGET] [TARGET...]
#
# SECONDS_PER_TARGET defaults to 60; TARGETs default to all of them: safetensors npy recipe
# manifest audio image idx index. -j N runs N targets at once (default 1); two invocations with different
# target lists may also run side by side (the build is serialised by a lock).
#
# On Debian 12, as root, installs what is missing: the project's packages (.ci/deps) and
# clang-14, libclang-rt-14-dev (libFuzzer and the sanitizer runtimes) and libomp-14-dev
# (OpenMP for clang). Then configures build-fuzz (clang, -Dfuzz=enabled: ASan + UBSan +
# coverage on the library sources) and builds the targets with `nice -n $NICE ninja -j
# $NINJA_JOBS` (19 and 1 unless set). Each target runs under `nice -n $NICE` on its own working
# corpus, build-fuzz/fuzz-work/TARGET/corpus: the committed seeds (tests/fuzz/corpus/TARGET)
# copied in, plus what earlier runs found, so the committed corpus is never written to. Limits:
# -rss_limit_mb=$RSS_MB (2048), -timeout=$TIMEOUT_S per input (10). Leaks inside third-party
# decoders that no caller can free are suppressed by tests/fuzz/lsan.supp (each one named there).
#
# Reports per target the executions, exec/s, coverage (cov and ft of libFuzzer's last line) and
# whether it crashed; writes one line per target to SUMMARY (default
# build-fuzz/fuzz-work/summary.txt); exits 1 on any crash, leak, timeout, out-of-memory or
# sanitizer report (the reproducer is under build-fuzz/fuzz-work/TARGET/artifacts/:
# rerun it with build-fuzz/tests/fuzz/fuzz_TARGET FILE).
set -euo pipefail

ALL_TARGETS=(safetensors npy recipe manifest audio image idx index)
cd "$(dirname "$0")/../.."
ROOT=$PWD
BUILD=$ROOT/build-fuzz
WORK=$BUILD/fuzz-work
NICE=${NICE:-19}
NINJA_JOBS=${NINJA_JOBS:-1}
RSS_MB=${RSS_MB:-2048}
TIMEOUT_S=${TIMEOUT_S:-10}
JOBS=1
SUMMARY=$WORK/summary.txt

usage() { sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while getopts "j:o:h" opt; do
  case $opt in
    j) JOBS=$OPTARG ;;
    o) SUMMARY=$OPTARG ;;
    h) usage 0 ;;
    *) usage 2 ;;
  esac
done
shift $((OPTIND - 1))
SECONDS_PER=60
if [ $# -gt 0 ] && [[ $1 =~ ^[0-9]+$ ]]; then SECONDS_PER=$1; shift; fi
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=("${ALL_TARGETS[@]}")
for t in "${TARGETS[@]}"; do
  [[ " ${ALL_TARGETS[*]} " == *" $t "* ]] || { echo "run.sh: unknown target '$t' (${ALL_TARGETS[*]})" >&2; exit 2; }
done

# ---- tools ----
CC=${CC:-$(command -v clang-14 || command -v clang || echo clang-14)}
CXX=${CXX:-${CC/clang/clang++}}
fuzzer_links() {
  printf '#include <stddef.h>\n#include <stdint.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n' |
    "$CC" -fsanitize=fuzzer -x c - -o /dev/null 2>/dev/null
}
if ! command -v meson >/dev/null || ! command -v "$CC" >/dev/null || ! fuzzer_links; then
  if [ "$(id -u)" != 0 ]; then
    echo "run.sh: clang with libFuzzer is missing; as root: apt-get install clang-14 libclang-rt-14-dev libomp-14-dev" >&2
    exit 2
  fi
  bash .ci/deps
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends clang-14 libclang-rt-14-dev libomp-14-dev
  CC=$(command -v clang-14); CXX=$(command -v clang++-14)
  fuzzer_links || { echo "run.sh: $CC still cannot link -fsanitize=fuzzer" >&2; exit 2; }
fi

# ---- build (one invocation at a time) ----
mkdir -p "$WORK"
exec 9>"$WORK/.build.lock"
flock 9
if [ ! -f "$BUILD/build.ninja" ]; then
  CC=$CC CXX=$CXX nice -n "$NICE" meson setup "$BUILD" -Dfuzz=enabled -Db_lundef=false -Dcuda=disabled \
    -Dfaiss=disabled -Dmpi=disabled -Donednn=disabled --buildtype=debugoptimized
fi
nice -n "$NICE" ninja -C "$BUILD" -j "$NINJA_JOBS" "${TARGETS[@]/#/tests/fuzz/fuzz_}"
flock -u 9

# ---- run ----
# one target: its log in WORK/TARGET/fuzz.log, its result line in WORK/TARGET/result
run_target() {
  local t=$1 dir=$WORK/$1
  mkdir -p "$dir/corpus" "$dir/artifacts" "$dir/tmp"
  cp -n "$ROOT/tests/fuzz/corpus/$t/"* "$dir/corpus/"
  local dict=()
  [ -f "$ROOT/tests/fuzz/$t.dict" ] && dict=(-dict="$ROOT/tests/fuzz/$t.dict")
  local rc=0
  (cd "$dir" && TMPDIR=$dir/tmp OMP_NUM_THREADS=1 \
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:allocator_may_return_null=0 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    LSAN_OPTIONS=suppressions=$ROOT/tests/fuzz/lsan.supp:print_suppressions=0 \
    nice -n "$NICE" "$BUILD/tests/fuzz/fuzz_$t" -max_total_time="$SECONDS_PER" -rss_limit_mb="$RSS_MB" \
      -timeout="$TIMEOUT_S" -print_final_stats=1 -artifact_prefix="$dir/artifacts/" "${dict[@]}" corpus \
      >"$dir/fuzz.log" 2>&1) || rc=$?
  local last execs rate cov ft corp result
  last=$(grep -E '^#[0-9]+.*cov: ' "$dir/fuzz.log" | tail -n 1 || true)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$dir/fuzz.log" | tail -n 1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$dir/fuzz.log" | tail -n 1)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([^ ]*\).*/\1/p' <<<"$last")
  local report
  report=$(grep -m1 -E 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error:|SUMMARY: |==[0-9]+== ?ERROR' "$dir/fuzz.log" || true)
  if [ "$rc" = 0 ] && [ -z "$report" ]; then
    result=ok
  else
    local art
    art=$(ls -t "$dir/artifacts" 2>/dev/null | grep -E '^(crash|leak|timeout|oom)-' | head -n 1 || true)
    result="FAILED(rc=$rc${art:+ artifact=$dir/artifacts/$art})"
    [ -n "$report" ] && echo "$t: ${report}" >&2
  fi
  printf '%s seconds=%s execs=%s exec_per_s=%s cov=%s ft=%s corpus=%s result=%s\n' "$t" "$SECONDS_PER" \
    "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$result" >"$dir/result"
  cat "$dir/result"
}

running=0
for t in "${TARGETS[@]}"; do
  if [ "$running" -ge "$JOBS" ]; then wait -n || true; running=$((running - 1)); fi
  run_target "$t" &
  running=$((running + 1))
done
wait

failed=0
mkdir -p "$(dirname "$SUMMARY")"
for t in "${TARGETS[@]}"; do
  line=$(cat "$WORK/$t/result")
  echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) $line" >>"$SUMMARY"
  [[ $line == *result=ok ]] || failed=1
done
echo "summary appended to $SUMMARY"
exit "$failed"
