#!/usr/bin/env bash
# AVIF against libvips' heifsave (AV1 through libaom), whole command, one pinned core:
# `pixq process large/ --ops thumbnail:1600,format:avif` against `vips thumbnail ... .avif`
# per photo, at matched file size (libvips' Q searched so its files total what pixq's do),
# with PSNR against the same 1600 px thumbnail as PNG. Prints times, sizes and ratios.
#
#   bench/avif.sh                      # builds pixq (release), makes the corpus if missing
#   PIXQ_PIXQ=path/to/pixq bench/avif.sh
# Needs Debian's libvips-tools (with libheif and libaom).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pixq-target}"
BENCH_DIR="${PIXQ_BENCH_DIR:-$HOME/.cache/pixq-bench}"
[ -d "$BENCH_DIR/large" ] || PIXQ_BENCH_DIR="$BENCH_DIR" bash "$REPO/bench/make-corpus.sh"
PIXQ="${PIXQ_PIXQ:-}"
if [ -z "$PIXQ" ]; then
    (cd "$REPO" && cargo build -q --release -p pixq-cli --no-default-features)
    PIXQ="$CARGO_TARGET_DIR/release/pixq"
fi
exec python3 "$REPO/bench/avif.py" "$PIXQ" "$BENCH_DIR/large"
