#!/usr/bin/env bash
# Whole-command speed against libvips, ImageMagick, the kernel alone and libjpeg-turbo's
# decoder, timed as a user times it; prints figures and ratios (see bench/e2e.py).
#
#   bench/e2e.sh      # builds pixq and kbench (release), makes the corpus if missing
#
# Needs Debian's libvips-tools, imagemagick and libjpeg-turbo-progs (vipsthumbnail,
# convert, djpeg); a missing one is skipped. PIXQ_E2E_REPEATS (default 5) turns per tool.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pixq-target}"
BENCH_DIR="${PIXQ_BENCH_DIR:-$HOME/.cache/pixq-bench}"
[ -d "$BENCH_DIR/large" ] && [ -d "$BENCH_DIR/web" ] || PIXQ_BENCH_DIR="$BENCH_DIR" bash "$REPO/bench/make-corpus.sh"
(cd "$REPO" && cargo build -q --release -p pixq-cli && cargo build -q --release -p pixq-kernel --example kbench)
exec python3 "$REPO/bench/e2e.py" "$CARGO_TARGET_DIR/release/pixq" "$CARGO_TARGET_DIR/release/examples/kbench" "$BENCH_DIR"
