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
source "$(dirname "${BASH_SOURCE[0]}")/pixq-release.sh"
exec python3 "$REPO/bench/avif.py" "$PIXQ" "$BENCH_DIR/large"
