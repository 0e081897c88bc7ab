#!/usr/bin/env bash
# The README's run command: the local runner in front of three simulated
# regional GPU backends (127.0.0.1:9101-9103), listening on 127.0.0.1:8080,
# configured by wrangler.toml. Builds what it needs on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  rustup target add wasm32-wasip2   # the sandboxed core is a wasm32-wasip2 component
fi
exec cargo run --release -p edgegate-local-runner -- demo --config wrangler.toml "$@"
