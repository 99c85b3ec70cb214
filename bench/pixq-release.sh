# Sourced by the whole-command benches: sets REPO, BENCH_DIR (making the corpus if it is
# missing) and PIXQ (PIXQ_PIXQ, or a release build of the embedded-default CLI).
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pixq-target}"
BENCH_DIR="${PIXQ_BENCH_DIR:-$HOME/.cache/pixq-bench}"
[ -d "$BENCH_DIR/large" ] || PIXQ_BENCH_DIR="$BENCH_DIR" bash "$REPO/bench/make-corpus.sh"
PIXQ="${PIXQ_PIXQ:-}"
if [ -z "$PIXQ" ]; then
    (cd "$REPO" && cargo build -q --release -p pixq-cli --no-default-features)
    PIXQ="$CARGO_TARGET_DIR/release/pixq"
fi
