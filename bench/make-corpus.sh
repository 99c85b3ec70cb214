#!/usr/bin/env bash
# Build the pixq benchmark corpus OUTSIDE the repo, from the photos in samples/.
#
#   bench/make-corpus.sh            # -> ${PIXQ_BENCH_DIR:-$HOME/.cache/pixq-bench}
#
# Makes
#   large/  6 JPEGs, 8-20 MP, q90 4:2:0 (camera-like sizes)
#   web/   12 JPEGs, < 1 MP, q90 4:2:0, longest side 1100-1280 px (so a
#           "longest side 1024" thumbnail always downscales, whatever the tool's
#           upscale policy)
#   huge/   1 JPEG, 8660x5773 (50 MP), q90 4:2:0
#   png/    (empty, reserved)
#
# The seed photos are at most 640 px wide, so each large image is a mosaic of
# 1-9 seed photos upscaled with libvips (Lanczos3, via `vips thumbnail --crop`),
# then lightly sharpened and given mild Gaussian noise with ImageMagick so it has
# camera-like high-frequency detail instead of being unnaturally smooth (this
# matters: JPEG decode/encode cost grows with the number of non-zero
# coefficients). web/ images are downscaled crops of the large ones.
#
# Idempotent: an existing output file is kept. Delete a file (or the whole
# directory) to rebuild it. Needs `vips` (libvips-tools) and /usr/bin/convert
# (imagemagick); both from Debian: apt-get install libvips-tools imagemagick.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SAMPLES="$REPO/samples"
OUT="${PIXQ_BENCH_DIR:-$HOME/.cache/pixq-bench}"
CONVERT=/usr/bin/convert   # the real ImageMagick, not a stand-in elsewhere on PATH

command -v vips >/dev/null || { echo "make-corpus: 'vips' not found (apt-get install libvips-tools)" >&2; exit 1; }
[ -x "$CONVERT" ] || { echo "make-corpus: $CONVERT not found (apt-get install imagemagick)" >&2; exit 1; }

SEEDS=("$SAMPLES/coffee.jpg" "$SAMPLES/rocket.jpg" "$SAMPLES/astronaut.png" "$SAMPLES/chelsea.jpg")
for s in "${SEEDS[@]}"; do [ -f "$s" ] || { echo "make-corpus: missing seed photo $s" >&2; exit 1; }; done

mkdir -p "$OUT/large" "$OUT/web" "$OUT/huge" "$OUT/png"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/pixq-corpus.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

made=()
kept=()

# mosaic OUT W H COLS ROWS SEED_OFFSET NOISE_SEED
#   Grid of COLS x ROWS seed photos, each upscaled (libvips Lanczos3) and
#   centre-cropped to fill its cell, every other cell mirrored, then sharpened
#   and noised with ImageMagick (per tile: Debian's ImageMagick policy.xml caps
#   the pixel cache at 256 MiB memory / 1 GiB disk, which a whole 50 MP image
#   exceeds, and `-limit` cannot raise a policy maximum); joined, cropped to
#   exactly W x H and saved by libvips as a q90 4:2:0 baseline JPEG without
#   metadata.
mosaic() {
    local out="$1" w="$2" h="$3" cols="$4" rows="$5" off="$6" seed="$7"
    if [ -s "$out" ]; then kept+=("$out"); return; fi
    local tw=$(( (w + cols - 1) / cols )) th=$(( (h + rows - 1) / rows ))
    local tiles=() i=0 n=$((cols * rows)) src t
    while [ $i -lt $n ]; do
        # shift the seed order by one per row, so columns do not repeat
        src="${SEEDS[$(( (i + i / cols + off) % ${#SEEDS[@]} ))]}"
        vips thumbnail "$src" "$TMP/up.v" "$tw" --height "$th" --crop centre
        if [ $(( (i + i / cols + off / 2) % 2 )) -eq 1 ]; then
            vips flip "$TMP/up.v" "$TMP/up.ppm" horizontal
        else
            vips copy "$TMP/up.v" "$TMP/up.ppm"
        fi
        t="$TMP/tile$i.ppm"
        "$CONVERT" "$TMP/up.ppm" -seed $((seed * 100 + i)) -unsharp 0x1.2+0.7+0 \
            -attenuate 0.35 +noise Gaussian -strip "$t"
        # (-strip: IM copies vips' PPM comment lines, incl. an empty "#", which
        # the vips 8.14 PPM reader then misparses as a 1-pixel-wide image)
        rm -f "$TMP/up.v" "$TMP/up.ppm"
        tiles+=("$t")
        i=$((i + 1))
    done
    if [ "$cols" -eq 1 ]; then
        # vips 8.14 `arrayjoin --across 1` segfaults (also with a single image):
        # stack the column with pairwise `vips join` instead
        vips copy "${tiles[0]}" "$TMP/mosaic.v"
        for t in "${tiles[@]:1}"; do
            vips join "$TMP/mosaic.v" "$t" "$TMP/mosaic2.v" vertical
            mv "$TMP/mosaic2.v" "$TMP/mosaic.v"
        done
    else
        vips arrayjoin "${tiles[*]}" "$TMP/mosaic.v" --across "$cols"
    fi
    vips crop "$TMP/mosaic.v" "$TMP/out.jpg[Q=90,subsample-mode=on,strip]" 0 0 "$w" "$h"
    mv "$TMP/out.jpg" "$out"
    rm -f "$TMP"/tile*.ppm "$TMP/mosaic.v"
    made+=("$out")
}

# large/: name W H cols rows seed-offset
mosaic "$OUT/large/L01-4000x3000.jpg" 4000 3000 1 1 0 11   # single photo (coffee), 6.7x upscale
mosaic "$OUT/large/L02-4896x3264.jpg" 4896 3264 2 2 1 12
mosaic "$OUT/large/L03-5472x3648.jpg" 5472 3648 3 2 2 13
mosaic "$OUT/large/L04-3000x4000.jpg" 3000 4000 1 2 2 14   # portrait
mosaic "$OUT/large/L05-4032x3024.jpg" 4032 3024 3 3 3 15
mosaic "$OUT/large/L06-3264x2448.jpg" 3264 2448 1 1 1 16   # single photo (rocket), 8 MP

# huge/: 50 MP
mosaic "$OUT/huge/H01-8660x5773.jpg" 8660 5773 4 3 0 21

# web/: downscaled crops of the large images.
#   name W H source-large crop-left-fraction crop-top-fraction
web() {
    local out="$1" w="$2" h="$3" srcimg="$4" fx="$5" fy="$6"
    if [ -s "$out" ]; then kept+=("$out"); return; fi
    local sw sh
    sw=$(vipsheader -f width "$srcimg"); sh=$(vipsheader -f height "$srcimg")
    # crop region with the target's aspect ratio, about 2.2x the target size
    # (or as large as fits), placed at the given fractions of the free space
    local geom
    geom=$(awk -v w="$w" -v h="$h" -v sw="$sw" -v sh="$sh" -v fx="$fx" -v fy="$fy" 'BEGIN {
        f = 2.2; if (sw / w < f) f = sw / w; if (sh / h < f) f = sh / h;
        cw = int(w * f); ch = int(h * f);
        l = int((sw - cw) * fx); t = int((sh - ch) * fy);
        print l, t, cw, ch }')
    # shellcheck disable=SC2086
    vips crop "$srcimg" "$TMP/crop.v" $geom
    vips thumbnail "$TMP/crop.v" "$TMP/web.jpg[Q=90,subsample-mode=on,strip]" "$w" --height "$h" --size force
    mv "$TMP/web.jpg" "$out"
    rm -f "$TMP/crop.v"
    made+=("$out")
}

L="$OUT/large"
web "$OUT/web/W01-1200x800.jpg"  1200 800  "$L/L01-4000x3000.jpg" 0.3 0.4
web "$OUT/web/W02-1280x720.jpg"  1280 720  "$L/L02-4896x3264.jpg" 0.1 0.2
web "$OUT/web/W03-1152x768.jpg"  1152 768  "$L/L03-5472x3648.jpg" 0.8 0.7
web "$OUT/web/W04-800x1200.jpg"  800  1200 "$L/L04-3000x4000.jpg" 0.5 0.1
web "$OUT/web/W05-1280x853.jpg"  1280 853  "$L/L05-4032x3024.jpg" 0.2 0.9
web "$OUT/web/W06-1100x825.jpg"  1100 825  "$L/L06-3264x2448.jpg" 0.5 0.5
web "$OUT/web/W07-1152x864.jpg"  1152 864  "$L/L02-4896x3264.jpg" 0.9 0.8
web "$OUT/web/W08-768x1152.jpg"  768  1152 "$L/L04-3000x4000.jpg" 0.4 0.9
web "$OUT/web/W09-1280x768.jpg"  1280 768  "$L/L03-5472x3648.jpg" 0.0 0.0
web "$OUT/web/W10-1200x675.jpg"  1200 675  "$L/L05-4032x3024.jpg" 0.6 0.3
web "$OUT/web/W11-1248x832.jpg"  1248 832  "$L/L01-4000x3000.jpg" 0.9 0.1
web "$OUT/web/W12-1066x800.jpg"  1066 800  "$L/L06-3264x2448.jpg" 0.1 0.8

echo "pixq bench corpus in $OUT"
echo "  made ${#made[@]} file(s), kept ${#kept[@]} existing"
for d in large web huge; do
    n=$(find "$OUT/$d" -maxdepth 1 -name '*.jpg' | wc -l)
    sz=$(du -sh "$OUT/$d" | cut -f1)
    echo "  $d/: $n JPEG(s), $sz"
done
for f in "${made[@]}"; do
    printf '  + %s  %s  %s bytes\n' "${f#"$OUT"/}" \
        "$(vipsheader -f width "$f")x$(vipsheader -f height "$f")" "$(stat -c %s "$f")"
done
