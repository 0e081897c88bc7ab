// Serves the built Worker (edge/build, from scripts/build-edge.sh) in workerd
// through Miniflare on 127.0.0.1, for the conformance suite (tests/), with
// the bindings wrangler.toml gives it in production:
//
//   node tests/workerd/serve.mjs SETTINGS.json
//
// SETTINGS: {"gateway": {...}, "secrets": {NAME: value}, "vars": {NAME: "value"},
// "persist": dir for KV and the quota Durable Objects, "log_file": path}.
// Prints `READY http://127.0.0.1:PORT` once it listens; disposes of workerd
// and exits when stdin closes (its parent went away) or on SIGTERM/SIGINT.
import { appendFileSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const edgeDir = resolve(dirname(fileURLToPath(import.meta.url)), "../../edge");
// Miniflare comes with wrangler, in edge/node_modules.
const miniflarePath = createRequire(resolve(edgeDir, "package.json")).resolve("miniflare");
const { Miniflare, convertV4MiniflareOptions } = await import(pathToFileURL(miniflarePath).href);

const settings = JSON.parse(readFileSync(process.argv[2], "utf8"));
const log = (line) => {
  if (settings.log_file) appendFileSync(settings.log_file, `${line}\n`);
};

const mf = new Miniflare(
  convertV4MiniflareOptions({
    rootPath: edgeDir,
    modules: [
      { type: "ESModule", path: "build/index.js" },
      { type: "CompiledWasm", path: "build/index_bg.wasm" },
    ],
    compatibilityDate: "2026-11-01",
    kvNamespaces: { EDGEGATE_KV: "edgegate-kv" },
    durableObjects: { QUOTA: { className: "QuotaObject", useSQLite: true } },
    analyticsEngineDatasets: { USAGE: { dataset: "edgegate_usage" } },
    bindings: { ...settings.vars, ...settings.secrets, gateway: settings.gateway },
    resourcePersistencePath: settings.persist,
    host: "127.0.0.1",
    port: 0,
    // No location in request.cf (Miniflare's placeholder is Austin, TX): a
    // client without geo headers is at the config's default location, as
    // it is with the local runner.
    cf: { colo: "LOCAL" },
    handleStructuredLogs: ({ level, message }) => {
      log(`[${level}] ${message}`);
      if (level === "error" || level === "warn") process.stderr.write(`[worker ${level}] ${message}\n`);
    },
  }),
);

let stopping = false;
async function stop() {
  if (stopping) return;
  stopping = true;
  await mf.dispose().catch(() => {});
  process.exit(0);
}
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
process.stdin.on("end", stop);
process.stdin.on("close", stop);
process.stdin.resume();

const url = await mf.ready;
console.log(`READY ${url.origin}`);
