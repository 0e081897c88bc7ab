#!/usr/bin/env bash
# Runs every check and test edgegate has. The README's test command.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

scripts/setup.sh

step "format"
cargo fmt --all -- --check

step "clippy"
cargo clippy --workspace --all-targets --release -- -D warnings

step "core builds for both wasm targets"
cargo build -p edgegate-core --release --target wasm32-unknown-unknown
cargo build -p edgegate-core --release --target wasm32-wasip2

step "unit, property and integration tests"
cargo test --workspace --release
