#!/usr/bin/env bash
# Queue overhead of the embedded flow (store -> queue -> worker -> store), via the
# `flowbench` example of pixq-jobs:
#   1. tiny jobs: N distinct 64x64 PNG -> grayscale with 2 kernel lanes (and the default prefetch), jobs/second
#      (on the store's real disk, and on tmpfs when /dev/shm exists, to separate the
#      filesystem's cost from pixq's);
#   2. photos: the corpus' 12-20 MP JPEGs -> thumbnail:1024 and a full-resolution pipeline,
#      one kernel lane, share of wall time outside the kernel, with the worker's default
#      prefetch (I/O of the jobs in hand overlaps the kernel) and without (each job start to
#      end on its lane), then two lanes (the default on 2 cores).
# Corpus: bench/make-corpus.sh (run it first). Nothing here is a pass/fail test.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pixq-target}"
BENCH_DIR="${PIXQ_BENCH_DIR:-$HOME/.cache/pixq-bench}"
N="${PIXQ_FLOW_JOBS:-3000}"
(cd "$REPO" && cargo build -q --release -p pixq-jobs --example flowbench)
FB="$CARGO_TARGET_DIR/release/examples/flowbench"

echo "== tiny jobs, 2 kernel lanes, store on the disk under \$TMPDIR (${TMPDIR:-/tmp})"
"$FB" tiny "$N" 2
echo "== same, fsync off"
PIXQ_FSYNC=0 "$FB" tiny "$N" 2
if [ -d /dev/shm ]; then
  echo "== tiny jobs, 2 kernel lanes, store on tmpfs (/dev/shm)"
  TMPDIR=/dev/shm "$FB" tiny "$N" 2
fi
if [ -d "$BENCH_DIR/large" ]; then
  export PIXQ_FLOW_ROUNDS="${PIXQ_FLOW_ROUNDS:-10}"
  for ops in "thumbnail:1024" "rotate:90,brightness:10,contrast:1.2"; do
    echo "== photos ($BENCH_DIR/large) '$ops', 1 kernel lane, default prefetch"
    "$FB" photos "$BENCH_DIR/large" "$ops" 1
    echo "== same, no prefetch"
    PIXQ_FLOW_PREFETCH=0 "$FB" photos "$BENCH_DIR/large" "$ops" 1
    echo "== same, 2 kernel lanes, default prefetch"
    "$FB" photos "$BENCH_DIR/large" "$ops" 2
  done
else
  echo "(no corpus at $BENCH_DIR/large: run bench/make-corpus.sh for the photo figures)"
fi
