#!/usr/bin/env bash
# Compare pixq (kbench) with libvips (pyvips, in-process) and, for P1, ImageMagick,
# on one pinned core. Prints images/second per tool and the ratio pixq/libvips.
#
#   bench/make-corpus.sh     # once (this script runs it too if the corpus is missing)
#   bench/compare.sh [SCENARIO...]     # default: P1-large P1-web P2 P3 M
#
# Scenarios
#   P1-large, P1-web  decode JPEG, longest side 1024 (Lanczos3), JPEG q85 4:2:0
#   P2                grayscale, gaussian blur sigma 2, Sobel magnitude,
#                     8-bit PNG, zlib level 6, adaptive row filters   (large/)
#   P3                rotate 90, brightness +10 / contrast 1.2, JPEG q85 (large/)
#   M                 peak RSS (/usr/bin/time -v) of a 1024 px thumbnail of huge/
# Whole-command scenarios (the `pixq` binary, release build; minutes each, so not in the
# default set; `all` runs every scenario):
#   AVIF              bench/avif.sh: 1600 px AVIF against libvips' heifsave at matched size
#   V                 bench/variants.sh: variants from one decode against separate jobs
#   ANIM              bench/anim.sh: animated GIF -> GIF / WebP thumbnails against
#                     libvips and ImageMagick
#
# Method: each tool first runs once untimed (warm-up: page cache, lazy init),
# then the tools take turns, PIXQ_BENCH_REPEATS times, so that noise on a shared
# machine hits all of them; the median of the repeats is reported. pixq and
# libvips time themselves in-process (start-up not counted); ImageMagick is one
# `convert` process per image, so its figure includes process start-up (~10-20
# ms, which matters for web/ but not for large/).
#
# Environment (all optional)
#   PIXQ_BENCH_DIR        corpus             (default ~/.cache/pixq-bench)
#   PIXQ_BENCH_VENV       venv with pyvips   (default $PIXQ_BENCH_DIR/venv)
#   CARGO_TARGET_DIR      kbench build dir   (default ~/.cache/pixq-target)
#   PIXQ_KBENCH           use this kbench binary and do not build
#   PIXQ_BENCH_NO_BUILD=1 do not run cargo; use the kbench already built, if any
#   PIXQ_BENCH_CPU        core to pin to     (default 0)
#   PIXQ_BENCH_REPEATS    timed turns per tool (default 3)
#   PIXQ_BENCH_ROUNDS_LARGE / PIXQ_BENCH_ROUNDS_WEB
#                         passes over the files within one timed run (default 1 / 5)
#   PIXQ_BENCH_P2_FILES   use only the first N large/ files for P2 (default: all)
#   PIXQ_BENCH_NO_MAGICK=1 skip ImageMagick
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH_DIR="${PIXQ_BENCH_DIR:-$HOME/.cache/pixq-bench}"
VENV="${PIXQ_BENCH_VENV:-$BENCH_DIR/venv}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pixq-target}"
CPU="${PIXQ_BENCH_CPU:-0}"
REPEATS="${PIXQ_BENCH_REPEATS:-3}"
ROUNDS_LARGE="${PIXQ_BENCH_ROUNDS_LARGE:-1}"
ROUNDS_WEB="${PIXQ_BENCH_ROUNDS_WEB:-5}"
CONVERT=/usr/bin/convert
TIME=/usr/bin/time
LOG_DIR="$(mktemp -d "${TMPDIR:-/tmp}/pixq-compare.XXXXXX")"
trap 'rm -rf "$LOG_DIR"' EXIT

SCENARIOS=("$@")
[ ${#SCENARIOS[@]} -gt 0 ] || SCENARIOS=(P1-large P1-web P2 P3 M)
[ "${SCENARIOS[*]}" != all ] || SCENARIOS=(P1-large P1-web P2 P3 M AVIF V ANIM)

say() { printf '%s\n' "$*"; }
hr() { say "------------------------------------------------------------------"; }

# one thread everywhere, pinned to one core
export VIPS_CONCURRENCY=1 RAYON_NUM_THREADS=1 OMP_NUM_THREADS=1 MAGICK_THREAD_LIMIT=1
if command -v taskset >/dev/null; then
    PIN=(taskset -c "$CPU")
else
    say "WARNING: taskset not found, running unpinned"
    PIN=()
fi

# ---------------------------------------------------------------- corpus
shopt -s nullglob
LARGE=("$BENCH_DIR"/large/*.jpg)
WEB=("$BENCH_DIR"/web/*.jpg)
HUGE=("$BENCH_DIR"/huge/*.jpg)
if [ ${#LARGE[@]} -eq 0 ] || [ ${#WEB[@]} -eq 0 ] || [ ${#HUGE[@]} -eq 0 ]; then
    say "corpus incomplete in $BENCH_DIR: running bench/make-corpus.sh"
    PIXQ_BENCH_DIR="$BENCH_DIR" bash "$REPO/bench/make-corpus.sh" || { say "make-corpus.sh failed"; exit 1; }
    LARGE=("$BENCH_DIR"/large/*.jpg)
    WEB=("$BENCH_DIR"/web/*.jpg)
    HUGE=("$BENCH_DIR"/huge/*.jpg)
fi
P2_FILES=("${LARGE[@]}")
if [ -n "${PIXQ_BENCH_P2_FILES:-}" ]; then P2_FILES=("${LARGE[@]:0:$PIXQ_BENCH_P2_FILES}"); fi
shopt -u nullglob

# ---------------------------------------------------------------- libvips (pyvips)
VPY=""
if "$VENV/bin/python" -c 'import pyvips' >/dev/null 2>&1; then
    VPY="$VENV/bin/python"
else
    say "setting up pyvips venv in $VENV"
    if python3 -m venv "$VENV" && "$VENV/bin/pip" install -q pyvips \
        && "$VENV/bin/python" -c 'import pyvips' >/dev/null 2>&1; then
        VPY="$VENV/bin/python"
    else
        say "LIBVIPS: pyvips unavailable (needs Debian's libvips42 and 'pip install pyvips'); skipping libvips"
    fi
fi
[ -n "$VPY" ] && say "libvips: $("$VPY" -c 'import pyvips; print("%d.%d.%d" % tuple(pyvips.version(i) for i in range(3)))') via pyvips (ABI mode), VIPS_CONCURRENCY=1"

# ---------------------------------------------------------------- pixq (kbench)
KBENCH=""
if [ -n "${PIXQ_KBENCH:-}" ]; then
    if [ -x "$PIXQ_KBENCH" ]; then KBENCH="$PIXQ_KBENCH"; else say "PIXQ: PIXQ_KBENCH=$PIXQ_KBENCH is not executable"; fi
else
    KB="$CARGO_TARGET_DIR/release/examples/kbench"
    if [ "${PIXQ_BENCH_NO_BUILD:-0}" != 1 ]; then
        say "building kbench: cargo build --release -p pixq-kernel --example kbench (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
        if (cd "$REPO" && cargo build --release -p pixq-kernel --example kbench) >"$LOG_DIR/build.log" 2>&1; then
            [ -x "$KB" ] && KBENCH="$KB" || say "PIXQ: build succeeded but $KB is missing"
        else
            say "PIXQ: kbench BUILD FAILED, pixq columns will be empty. Last lines of the build log:"
            tail -n 15 "$LOG_DIR/build.log" | sed 's/^/    /'
        fi
    elif [ -x "$KB" ]; then
        KBENCH="$KB"
    else
        say "PIXQ: no kbench at $KB (PIXQ_BENCH_NO_BUILD=1)"
    fi
fi
[ -n "$KBENCH" ] && say "pixq: $KBENCH"

HAVE_MAGICK=0
if [ "${PIXQ_BENCH_NO_MAGICK:-0}" != 1 ] && [ -x "$CONVERT" ]; then
    HAVE_MAGICK=1
    say "magick: $("$CONVERT" -version | head -n 1 | cut -d' ' -f2,3) (P1 only, one process per image, MAGICK_THREAD_LIMIT=1)"
fi
say "pinned to core $CPU; repeats=$REPEATS; rounds large=$ROUNDS_LARGE web=$ROUNDS_WEB"
say "corpus: ${#LARGE[@]} large, ${#WEB[@]} web, ${#HUGE[@]} huge in $BENCH_DIR"
hr

# ---------------------------------------------------------------- runners
# Each runner: run_<tool> SCENARIO ROUNDS FILE...; prints images/s or returns non-zero.
ERR="$LOG_DIR/err"

parse_ips() { sed -n 's/^images_per_sec=\([0-9.eE+-]*\).*/\1/p' | tail -n 1; }

kbench_args() {  # scenario -> kbench pipeline and encoder flags
    case "$1" in
        P1) echo "--ops thumbnail:1024 --format jpeg --quality 85" ;;
        P2) echo "--ops grayscale,blur:2,sobel --format png --png-level 6" ;;
        P3) echo "--ops rotate:90,brightness:10,contrast:1.2 --format jpeg --quality 85" ;;
    esac
}

run_pixq() {
    local sc="$1" rounds="$2"; shift 2
    local out ips
    # shellcheck disable=SC2046
    out=$("${PIN[@]}" "$KBENCH" $(kbench_args "$sc") --rounds "$rounds" "$@" 2>"$ERR") || return 1
    ips=$(printf '%s\n' "$out" | parse_ips)
    [ -n "$ips" ] || { printf 'no images_per_sec= line in output: %s\n' "$out" >>"$ERR"; return 1; }
    echo "$ips"
}

run_vips() {
    local sc="$1" rounds="$2"; shift 2
    local out ips
    out=$("${PIN[@]}" "$VPY" "$REPO/bench/vips_bench.py" --scenario "$sc" --rounds "$rounds" "$@" 2>"$ERR") || return 1
    ips=$(printf '%s\n' "$out" | parse_ips)
    [ -n "$ips" ] || return 1
    echo "$ips"
}

run_magick() {  # P1 only
    local sc="$1" rounds="$2"; shift 2
    [ "$sc" = P1 ] || return 1
    local t0 t1 r f n=0
    t0=$(date +%s%N)
    for ((r = 0; r < rounds; r++)); do
        for f in "$@"; do
            "${PIN[@]}" "$CONVERT" "$f" -filter Lanczos -resize 1024x1024 \
                -quality 85 -sampling-factor 2x2,1x1,1x1 -strip jpg:- >/dev/null 2>"$ERR" || return 1
            n=$((n + 1))
        done
    done
    t1=$(date +%s%N)
    awk -v n="$n" -v ns="$((t1 - t0))" 'BEGIN { printf "%.4f\n", n / (ns / 1e9) }'
}

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) exit 1; if (NR % 2) print a[(NR + 1) / 2]; else printf "%.4f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

declare -A RES   # RES[scenario,tool] = median images/s, or FAIL / -

# bench LABEL SCENARIO ROUNDS FILE...
bench() {
    local label="$1" sc="$2" rounds="$3"; shift 3
    local tools=() t v rep
    [ -n "$KBENCH" ] && tools+=(pixq) || RES[$label,pixq]="-"
    [ -n "$VPY" ] && tools+=(vips) || RES[$label,vips]="-"
    if [ "$HAVE_MAGICK" = 1 ] && [ "$sc" = P1 ]; then tools+=(magick); else RES[$label,magick]="-"; fi
    say "$label: $# files x $rounds round(s), tools: ${tools[*]:-none}"
    declare -A vals=() ok=()
    # warm-up, untimed; a tool that fails here is dropped for this scenario
    for t in "${tools[@]}"; do
        if "run_$t" "$sc" 1 "$@" >/dev/null; then
            ok[$t]=1
        else
            RES[$label,$t]="FAIL"
            say "  $t FAILED on $label (warm-up):"
            tail -n 5 "$ERR" | sed 's/^/    /'
        fi
    done
    for ((rep = 1; rep <= REPEATS; rep++)); do
        local line="  turn $rep:"
        for t in "${tools[@]}"; do
            [ -n "${ok[$t]:-}" ] || continue
            if v=$("run_$t" "$sc" "$rounds" "$@"); then
                vals[$t]="${vals[$t]:-} $v"
                line="$line  $t=$v"
            else
                unset "ok[$t]"
                RES[$label,$t]="FAIL"
                say "  $t FAILED on $label:"
                tail -n 5 "$ERR" | sed 's/^/    /'
            fi
        done
        say "$line"
    done
    for t in "${tools[@]}"; do
        [ -n "${ok[$t]:-}" ] && RES[$label,$t]=$(printf '%s\n' "${vals[$t]}" | median)
    done
}

# peak RSS in MB of a command, via /usr/bin/time -v
peak_rss() {
    if ! "${PIN[@]}" "$TIME" -v "$@" >/dev/null 2>"$LOG_DIR/time.txt"; then
        # the program's own stderr comes before time's report
        sed '/Command being timed/,$d' "$LOG_DIR/time.txt" | tail -n 5 >"$ERR"
        grep 'Exit status' "$LOG_DIR/time.txt" >>"$ERR"
        return 1
    fi
    awk -F: '/Maximum resident set size/ { printf "%.1f\n", $2 / 1024 }' "$LOG_DIR/time.txt"
}

# ---------------------------------------------------------------- run
M_PIXQ="-" M_VIPS="-" M_PYVIPS="-"
for s in "${SCENARIOS[@]}"; do
    case "$s" in
        P1-large) bench P1-large P1 "$ROUNDS_LARGE" "${LARGE[@]}" ;;
        P1-web) bench P1-web P1 "$ROUNDS_WEB" "${WEB[@]}" ;;
        P2) bench P2-large P2 "$ROUNDS_LARGE" "${P2_FILES[@]}" ;;
        P3) bench P3-large P3 "$ROUNDS_LARGE" "${LARGE[@]}" ;;
        M)
            if [ ! -x "$TIME" ]; then say "M: $TIME not found (apt-get install time), skipped"; continue; fi
            say "M: peak RSS, 1024 px thumbnail of ${HUGE[*]##*/}"
            if [ -n "$KBENCH" ]; then
                # shellcheck disable=SC2046
                M_PIXQ=$(peak_rss "$KBENCH" $(kbench_args P1) --rounds 1 "${HUGE[@]}") \
                    || { M_PIXQ=FAIL; say "  pixq FAILED:"; sed 's/^/    /' "$ERR"; }
            fi
            if command -v vipsthumbnail >/dev/null; then
                M_VIPS=$(peak_rss vipsthumbnail "${HUGE[0]}" -s 1024 -o "$LOG_DIR/m_%s.jpg[Q=85,strip]") \
                    || { M_VIPS=FAIL; say "  vipsthumbnail FAILED:"; sed 's/^/    /' "$ERR"; }
            fi
            if [ -n "$VPY" ]; then
                M_PYVIPS=$(peak_rss "$VPY" "$REPO/bench/vips_bench.py" --scenario P1 --rounds 1 "${HUGE[@]}") \
                    || M_PYVIPS=FAIL
            fi
            say "  peak RSS (MB): pixq kbench=$M_PIXQ  vipsthumbnail=$M_VIPS  pyvips incl. Python=$M_PYVIPS"
            ;;
        AVIF | V | ANIM)
            script=avif.sh
            [ "$s" = V ] && script=variants.sh
            [ "$s" = ANIM ] && script=anim.sh
            say "$s: bench/$script (whole command)"
            bash "$REPO/bench/$script" 2>&1 | sed 's/^/  /' | tee "$LOG_DIR/$s.txt"
            ;;
        *) say "unknown scenario '$s' (P1-large P1-web P2 P3 M AVIF V ANIM, or all)" ;;
    esac
done

# ---------------------------------------------------------------- table
ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f", a / b; else printf "n/a" }'
}
hr
say "images/second, one core (median of $REPEATS turns); ratio = pixq / libvips (>1: pixq faster)"
printf '%-10s %12s %12s %8s %12s\n' scenario "pixq" "libvips" ratio "magick"
for s in "${SCENARIOS[@]}"; do
    case "$s" in
        P1-large | P1-web) l="$s" ;;
        P2 | P3) l="$s-large" ;;
        *) continue ;;
    esac
    printf '%-10s %12s %12s %8s %12s\n' "$l" "${RES[$l,pixq]:--}" "${RES[$l,vips]:--}" \
        "$(ratio "${RES[$l,pixq]:-}" "${RES[$l,vips]:-}")" "${RES[$l,magick]:--}"
done
for s in "${SCENARIOS[@]}"; do
    if [ "$s" = M ]; then
        printf '%-10s %12s %12s %8s %12s\n' "M (MB)" "$M_PIXQ" "$M_VIPS" "$(ratio "$M_PIXQ" "$M_VIPS")" "-"
        say "  M: peak RSS in MB (lower is better; ratio <1: pixq leaner) of a 1024 px thumbnail of huge/;"
        say "     libvips = vipsthumbnail (C); pyvips in-process incl. Python: $M_PYVIPS MB"
    fi
done
for s in "${SCENARIOS[@]}"; do
    case "$s" in
        AVIF | V | ANIM)
            say "$s (whole command):"
            grep -E 'ratio|/' "$LOG_DIR/$s.txt" | grep -vE '^ *(making|building)' | sed 's/^ */  /'
            ;;
    esac
done
[ -n "$KBENCH" ] || say "NOTE: pixq was not measured (kbench missing or failed to build; see above)"
