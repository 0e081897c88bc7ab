#!/usr/bin/env bash
# Builds the Cloudflare Worker (edge/) into edge/build/ (index.js + wasm)
# with worker-build. wrangler runs it as wrangler.toml's [build] command;
# scripts/test.sh runs it before the Worker's tests. Needs scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
tools="${EDGEGATE_TOOLS:-$HOME/.cache/edgegate-tools}/bin"

# worker-build would download these three; use the pinned local copies.
export WASM_BINDGEN_BIN="$tools/wasm-bindgen"
export WASM_OPT_BIN="$root/edge/node_modules/.bin/wasm-opt"
export ESBUILD_BIN="$root/edge/node_modules/@esbuild/linux-x64/bin/esbuild"
for bin in "$tools/worker-build" "$WASM_BINDGEN_BIN" "$WASM_OPT_BIN" "$ESBUILD_BIN"; do
  if [ ! -x "$bin" ]; then
    echo "build-edge: $bin is missing; run scripts/setup.sh" >&2
    exit 1
  fi
done

# The Worker's release settings, small over fast, without changing the
# workspace's shared [profile.release]; its own target dir keeps the native
# build's artifacts valid. No strip: wasm-bindgen needs `target_features`.
export CARGO_PROFILE_RELEASE_OPT_LEVEL=s
export CARGO_PROFILE_RELEASE_LTO=true
export CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1
export CARGO_PROFILE_RELEASE_DEBUG=false
export CARGO_PROFILE_RELEASE_INCREMENTAL=false
export CARGO_TARGET_DIR="$root/target/edge"

cd edge
exec "$tools/worker-build" --release
