#!/usr/bin/env bash
# Variants against separate jobs, whole command, one pinned core: `pixq process` with
# `name=...;name=...` (one decode per photo) against one `pixq process` run per variant
# (one decode per photo and variant). Prints both times and the ratio variants/separate,
# the median of PIXQ_BENCH_REPEATS (default 3) turns, each on a fresh `.pixq` home.
#
#   bench/variants.sh                     # builds pixq (release), makes the corpus if missing
#   PIXQ_PIXQ=path/to/pixq bench/variants.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/pixq-release.sh"
CPU="${PIXQ_BENCH_CPU:-0}"
REPEATS="${PIXQ_BENCH_REPEATS:-3}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# seconds for one `pixq process` of the large photos with --ops "$1", on a fresh home
run() {
    rm -rf "$WORK/home" "$WORK/out"
    local s e
    s=$(date +%s.%N)
    taskset -c "$CPU" "$PIXQ" --home "$WORK/home" process "$BENCH_DIR/large" --ops "$1" --out "$WORK/out" --workers 1 >/dev/null
    e=$(date +%s.%N)
    echo "$e - $s" | bc
}

scenario() {  # name, variants string, then each variant's pipeline alone
    local name="$1" variants="$2"
    shift 2
    local v=() s=()
    for _ in $(seq "$REPEATS"); do
        v+=("$(run "$variants")")
        local sum=0
        for p in "$@"; do sum=$(echo "$sum + $(run "$p")" | bc); done
        s+=("$sum")
    done
    python3 - "$name" "${#v[@]}" "${v[@]}" "${s[@]}" <<'PY'
import statistics, sys
name, n = sys.argv[1], int(sys.argv[2])
v = [float(x) for x in sys.argv[3:3 + n]]
s = [float(x) for x in sys.argv[3 + n:3 + 2 * n]]
mv, ms = statistics.median(v), statistics.median(s)
print(f"{name:<34} variants {mv:6.2f} s   separate jobs {ms:6.2f} s   ratio {mv / ms:.2f}")
PY
}

echo "$(ls "$BENCH_DIR/large" | wc -l) photos in $BENCH_DIR/large, core $CPU, median of $REPEATS"
scenario "srcset 320/800/1600" 'small=thumbnail:320;medium=thumbnail:800;large=thumbnail:1600' \
    thumbnail:320 thumbnail:800 thumbnail:1600
scenario "srcset + webp 400/1200" 's=thumbnail:400;l=thumbnail:1200,format:webp' \
    thumbnail:400 thumbnail:1200,format:webp
scenario "mixed (grayscale: a full decode)" 'a=thumbnail:320;b=grayscale,thumbnail:800;c=sharpen:1,thumbnail:1600' \
    thumbnail:320 grayscale,thumbnail:800 sharpen:1,thumbnail:1600
