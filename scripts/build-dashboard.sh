#!/usr/bin/env bash
# Bundles the dashboard's code and style (dashboard/src, with uPlot from the
# npm registry) into core/src/dashboard/assets/, which the core builds into
# local-runner and the Worker with the page itself (include_str!). The bundle is committed,
# so a Rust build needs no Node; `--check` rebuilds it into a temporary
# folder and fails if the committed one differs from its sources.
set -euo pipefail
cd "$(dirname "$0")/.."

out=core/src/dashboard/assets
esbuild=dashboard/node_modules/.bin/esbuild
if [ ! -x "$esbuild" ]; then
  echo "build-dashboard: $esbuild is missing: run scripts/setup.sh" >&2
  exit 1
fi

build() {
  mkdir -p "$1"
  "$esbuild" dashboard/src/app.js --bundle --minify --format=iife --target=es2020 \
    --legal-comments=eof --charset=utf8 --log-level=warning --outdir="$1"
}

if [ "${1:-}" = "--check" ]; then
  fresh=$(mktemp -d)
  trap 'rm -rf "$fresh"' EXIT
  build "$fresh"
  if ! diff -r -q "$fresh" "$out"; then
    echo "build-dashboard: $out is not what dashboard/src builds to: run scripts/build-dashboard.sh and commit it" >&2
    exit 1
  fi
  echo "build-dashboard: $out is current"
else
  build "$out"
  ls -l "$out"
fi
