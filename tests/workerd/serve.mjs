// Serves the built Worker (edge/build, from scripts/build-edge.sh) in workerd
// through Miniflare on 127.0.0.1, for the conformance suite (tests/), with
// the bindings wrangler.toml gives it in production:
//
//   node tests/workerd/serve.mjs SETTINGS.json
//
// SETTINGS: {"gateway": {...}, "secrets": {NAME: value}, "vars": {NAME: "value"},
// "persist": dir for KV and the quota Durable Objects, "log_file": path}.
// Prints `READY http://127.0.0.1:PORT` once it listens; runs the cron for a
// line `probe` on stdin; disposes of workerd and exits when stdin closes (its
// parent went away) or on SIGTERM/SIGINT.
import { appendFileSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { workerOptions } from "../../edge/test/worker-options.mjs";

const edgeDir = resolve(dirname(fileURLToPath(import.meta.url)), "../../edge");
// Miniflare comes with wrangler, in edge/node_modules.
const miniflarePath = createRequire(resolve(edgeDir, "package.json")).resolve("miniflare");
const { Miniflare, convertV4MiniflareOptions } = await import(pathToFileURL(miniflarePath).href);

const settings = JSON.parse(readFileSync(process.argv[2], "utf8"));
const log = (line) => {
  if (settings.log_file) appendFileSync(settings.log_file, `${line}\n`);
};

const mf = new Miniflare(
  convertV4MiniflareOptions(
    workerOptions({
      bindings: { ...settings.vars, ...settings.secrets, gateway: settings.gateway },
      persist: settings.persist,
      onLog: (level, message) => log(`[${level}] ${message}`),
      extra: {
        host: "127.0.0.1",
        port: 0,
        // No location in request.cf (Miniflare's placeholder is Austin, TX): a
        // client without geo headers is at the config's default location, as
        // it is with the local runner.
        cf: { colo: "LOCAL" },
      },
    }),
  ),
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
// A line `probe` runs the Worker's cron (its region health probes) once, as
// Cloudflare's scheduler would; `PROBED` follows when it is over.
let pending = "";
process.stdin.on("data", async (data) => {
  pending += data;
  const lines = pending.split("\n");
  pending = lines.pop();
  for (const line of lines) {
    if (line.trim() !== "probe") continue;
    const worker = await mf.getWorker();
    await worker.scheduled({ cron: "* * * * *", scheduledTime: new Date() });
    console.log("PROBED");
  }
});
process.stdin.resume();

const url = await mf.ready;
console.log(`READY ${url.origin}`);
