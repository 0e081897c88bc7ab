// The Miniflare options that run the built Worker (edge/build) with the
// bindings wrangler.toml gives it in production. Shared by the Worker's own
// tests (harness.mjs) and the conformance suite's launcher
// (tests/workerd/serve.mjs), so both run the same Worker the same way.
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const edgeDir = resolve(dirname(fileURLToPath(import.meta.url)), "..");

/** Options for `convertV4MiniflareOptions`; `extra` adds or overrides fields. */
export function workerOptions({ bindings, persist, onLog, extra = {} }) {
  return {
    rootPath: edgeDir,
    modules: [
      { type: "ESModule", path: "build/index.js" },
      { type: "CompiledWasm", path: "build/index_bg.wasm" },
    ],
    compatibilityDate: "2026-11-01",
    kvNamespaces: { EDGEGATE_KV: "edgegate-kv" },
    durableObjects: {
      QUOTA: { className: "QuotaObject", useSQLite: true },
      GATE: { className: "GateObject", useSQLite: true },
      DIRECTORY: { className: "DirectoryObject", useSQLite: true },
    },
    analyticsEngineDatasets: { USAGE: { dataset: "edgegate_usage" } },
    bindings,
    resourcePersistencePath: persist,
    handleStructuredLogs: ({ level, message }) => {
      onLog(level, message);
      if (level === "error" || level === "warn") process.stderr.write(`[worker ${level}] ${message}\n`);
    },
    ...extra,
  };
}
