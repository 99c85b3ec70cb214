#!/usr/bin/env bash
# Animated GIF against libvips and ImageMagick, whole command, one pinned core:
# `pixq process anim/ --ops thumbnail:240` (animated GIF out) and `...,format:webp`
# (animated WebP out) against `vips thumbnail FILE[n=-1] OUT 240` per file (libvips 8.14:
# cgif for GIF, libwebp for WebP) and ImageMagick's `convert FILE -coalesce -resize
# 240x240 OUT`. Prints seconds, output bytes and ratios pixq / other, median of
# PIXQ_BENCH_REPEATS (default 3) turns.
#
#   bench/anim.sh                     # builds pixq (release), makes the animations if missing
#   PIXQ_PIXQ=path/to/pixq bench/anim.sh
#
# The animations ($BENCH_DIR/anim/, made once): 4 GIFs of 24 frames, 640x480, each a slow
# pan and zoom over one of the large/ photos, frame-optimised by ImageMagick (later frames
# are sub-rectangles, as most GIFs on the web are).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/pixq-release.sh"
CPU="${PIXQ_BENCH_CPU:-0}"
REPEATS="${PIXQ_BENCH_REPEATS:-3}"
CONVERT=/usr/bin/convert
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

ANIM="$BENCH_DIR/anim"
mkdir -p "$ANIM"
i=0
for photo in "$BENCH_DIR"/large/*.jpg; do
    [ $i -lt 4 ] || break
    out="$ANIM/pan-$i.gif"
    i=$((i + 1))
    [ -f "$out" ] && continue
    echo "making $out"
    vips thumbnail "$photo" "$WORK/seed.png" 1600
    args=()
    for f in $(seq 0 23); do
        w=$((1200 - f * 12)); x=$((f * 14)); y=$((f * 6))
        args+=(\( "$WORK/seed.png" -crop "${w}x$((w * 3 / 4))+$x+$y" +repage -resize 640x480! \))
    done
    "$CONVERT" -loop 0 -delay 8 "${args[@]}" -layers Optimize "$WORK/pan.gif"
    mv "$WORK/pan.gif" "$out"
done
FILES=("$ANIM"/*.gif)

secs() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N); echo "$e - $s" | bc; }
bytes() { cat "$@" | wc -c; }

pixq_run() {  # ops -> seconds; outputs in $WORK/p
    rm -rf "$WORK/home" "$WORK/p"
    secs taskset -c "$CPU" "$PIXQ" --home "$WORK/home" process "$ANIM" --ops "$1" --out "$WORK/p" --workers 1
}
vips_run() {  # ext -> seconds; outputs in $WORK/v
    rm -rf "$WORK/v"; mkdir -p "$WORK/v"
    local s e f
    s=$(date +%s.%N)
    for f in "${FILES[@]}"; do
        taskset -c "$CPU" vips thumbnail "$f[n=-1]" "$WORK/v/$(basename "$f" .gif).$1" 240
    done
    e=$(date +%s.%N)
    echo "$e - $s" | bc
}
magick_run() {  # ext -> seconds; outputs in $WORK/m
    rm -rf "$WORK/m"; mkdir -p "$WORK/m"
    local s e f
    s=$(date +%s.%N)
    for f in "${FILES[@]}"; do
        MAGICK_THREAD_LIMIT=1 taskset -c "$CPU" "$CONVERT" "$f" -coalesce -resize 240x240 "$WORK/m/$(basename "$f" .gif).$1"
    done
    e=$(date +%s.%N)
    echo "$e - $s" | bc
}

export VIPS_CONCURRENCY=1
echo "${#FILES[@]} animations (24 frames, 640x480) in $ANIM, core $CPU, median of $REPEATS"
for out in gif webp; do
    ops="thumbnail:240"
    [ "$out" = webp ] && ops="thumbnail:240,format:webp"
    p=() v=() m=()
    for _ in $(seq "$REPEATS"); do
        p+=("$(pixq_run "$ops")")
        v+=("$(vips_run "$out")")
        m+=("$(magick_run "$out")")
    done
    python3 - "$out" "$REPEATS" "${p[@]}" "${v[@]}" "${m[@]}" \
        "$(bytes "$WORK"/p/*)" "$(bytes "$WORK"/v/*)" "$(bytes "$WORK"/m/*)" <<'PY'
import statistics, sys
out, n = sys.argv[1], int(sys.argv[2])
t = [float(x) for x in sys.argv[3:3 + 3 * n]]
p, v, m = (statistics.median(t[k * n:(k + 1) * n]) for k in range(3))
bp, bv, bm = (int(x) for x in sys.argv[3 + 3 * n:])
print(f"animated {out:<4} thumbnail 240: pixq {p:5.2f} s {bp:>9} B | libvips {v:5.2f} s {bv:>9} B | "
      f"magick {m:5.2f} s {bm:>9} B | time pixq/libvips {p / v:.2f}, pixq/magick {p / m:.2f}; "
      f"size pixq/libvips {bp / bv:.2f}")
PY
done
