#!/usr/bin/env bash
# The whole test suite, from a fresh machine: set-up, formatting, lints, tests.
# Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pixq-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

bash scripts/setup.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy (workspace, all targets, -D warnings)"
cargo clippy --workspace --all-targets -- -D warnings

echo "== cargo test (workspace, default features: libjpeg-turbo)"
cargo test --workspace

echo "== cargo test (pixq-kernel, pure-Rust JPEG fallback)"
cargo test -p pixq-kernel --no-default-features

echo "== all tests passed"
