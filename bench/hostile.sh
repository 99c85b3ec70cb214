#!/usr/bin/env bash
# Peak memory of one `pixq-worker` working a mixed hostile batch (bench/hostile_corpus.py):
# crafted headers, a real 100 MP decompression bomb, four tiny PNGs each asking for 2.4 GB
# of work (resize:16384:16384:fill,blur:1), a rotation that would make 36062x36062, a
# 24-step blur chain that runs into the time limit, and the good sample photos. The worker
# runs with a memory budget (--memory-mb, default 3000 here) and 2 kernel lanes; the figure
# to watch is its peak RSS against that budget + 64 MB. Prints each job's outcome too.
# Nothing here is a pass/fail test.
#   PIXQ_BENCH_PROFILE=dev   use the dev build (image crates are optimised there as well;
#                            the memory figures are the same, the times are not)
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pixq-target}"
PROFILE="${PIXQ_BENCH_PROFILE:-release}"
BUDGET="${PIXQ_BENCH_MEMORY_MB:-3000}"
if [ "$PROFILE" = release ]; then
  (cd "$REPO" && cargo build -q --release -p pixq-cli -p pixq-worker)
  BIN="$CARGO_TARGET_DIR/release"
else
  (cd "$REPO" && cargo build -q -p pixq-cli -p pixq-worker)
  BIN="$CARGO_TARGET_DIR/debug"
fi
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
python3 "$REPO/bench/hostile_corpus.py" "$WORK/in" "$REPO/samples"
HOME_DIR="$WORK/home"
submit() { "$BIN/pixq" --home "$HOME_DIR" submit "$WORK/in/$1" --ops "$2" 2>/dev/null; }
B1=$(submit thumb thumbnail:256)
B2=$(submit upscale resize:16384:16384:fill,blur:1)
B3=$(submit rotate rotate:45)
B4=$(submit slow "$(printf 'blur:80,%.0s' $(seq 1 23))blur:80")
echo "== pixq-worker --memory-mb $BUDGET --concurrency 2 --job-timeout-secs 20 ($PROFILE build)"
/usr/bin/time -v "$BIN/pixq-worker" --home "$HOME_DIR" --concurrency 2 --memory-mb "$BUDGET" \
  --job-timeout-secs 20 --idle-stop-secs 3 --log-format json 2>"$WORK/worker.log" >/dev/null || true
for b in "$B1" "$B2" "$B3" "$B4"; do
  "$BIN/pixq" --home "$HOME_DIR" status "$b" | grep -v '^queue:' | sed -n '1,40p'
done
peak_kb=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$WORK/worker.log")
wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$WORK/worker.log")
echo "== peak RSS $((peak_kb / 1024)) MB with a budget of $BUDGET MB (budget + 64 MB = $((BUDGET + 64)) MB); wall $wall"
