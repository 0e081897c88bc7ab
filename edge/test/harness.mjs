// Runs the built Worker (edge/build) in workerd through Miniflare, against
// simulated regional backends (edgegate-sim) on 127.0.0.1.
import { spawn } from "node:child_process";
import { createHash, createHmac } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { createServer } from "node:net";
import { createInterface } from "node:readline";
import { DatabaseSync } from "node:sqlite";
import { fileURLToPath } from "node:url";
import { Miniflare, convertV4MiniflareOptions } from "miniflare";
import { workerOptions } from "./worker-options.mjs";

const edgeDir = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const repoDir = resolve(edgeDir, "..");

export const JWT_SECRET = "test-only-hs256-secret-0123456789abcdef";
export const JWT_ISSUER = "https://auth.edgegate.test";
export const ADMIN_KEY = "test-only-admin-key-0123456789abcdef";

/** A loopback address nothing listens on (connections are refused). */
export async function closedPortUrl() {
  const server = createServer();
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address();
  await new Promise((r) => server.close(r));
  return `http://127.0.0.1:${port}`;
}

export const sha256Hex = (text) => createHash("sha256").update(text).digest("hex");

/** Starts one backend per region; resolves to { urls: {region: baseUrl}, stop }. */
export async function startBackends(regions) {
  const bin = process.env.EDGEGATE_SIM ?? join(repoDir, "target/release/edgegate-sim");
  const spec = regions.map((r) => `${r}=127.0.0.1:0`).join(",");
  const child = spawn(bin, ["--spec", spec, "--latency-ms", "5", "--token-interval-ms", "10"], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  const urls = {};
  await new Promise((resolveReady, reject) => {
    child.once("error", reject);
    child.once("exit", (code) => reject(new Error(`edgegate-sim exited early (${code})`)));
    createInterface({ input: child.stdout }).on("line", (line) => {
      const [word, region, url] = line.split(" ");
      if (word === "READY") urls[region] = url;
      if (Object.keys(urls).length === regions.length) resolveReady();
    });
  });
  child.removeAllListeners("exit");
  return {
    urls,
    control: (region, body) =>
      fetch(`${urls[region]}/__control`, { method: "POST", body: JSON.stringify(body) }).then((r) => {
        if (!r.ok) throw new Error(`control ${region}: ${r.status}`);
      }),
    stats: (region) => fetch(`${urls[region]}/__stats`).then((r) => r.json()),
    stop: () =>
      new Promise((done) => {
        child.once("exit", done);
        child.kill("SIGTERM");
      }),
  };
}

/** Starts the Worker with `gateway` as its [vars.gateway]; `logs` collects its console output. */
export async function startWorker(gateway) {
  const persist = mkdtempSync(join(tmpdir(), "edgegate-mf-"));
  const logs = [];
  const mf = new Miniflare(
    convertV4MiniflareOptions(
      workerOptions({
        bindings: { gateway, JWT_SECRET, EDGEGATE_ADMIN_KEY: ADMIN_KEY },
        persist,
        onLog: (level, message) => logs.push({ level, message }),
      }),
    ),
  );
  await mf.ready;
  return {
    mf,
    logs,
    /** The row a quota object keeps, read from its SQLite file. */
    quotaRow: (objectId) => {
      const db = new DatabaseSync(join(persist, "do", "-QuotaObject", `${objectId}.sqlite`), { readOnly: true });
      try {
        // The counters record and the open reservation rows, as one state.
        const row = db.prepare("SELECT counters, alarm_ms FROM quota_counters").get();
        const outstanding = Object.fromEntries(
          db.prepare("SELECT id, reservation FROM quota_reservations").all()
            .map((r) => [r.id, JSON.parse(r.reservation)]),
        );
        return { state: { ...JSON.parse(row.counters), outstanding }, alarm_ms: row.alarm_ms };
      } finally {
        db.close();
      }
    },
    /** The usage record the Worker logged for a request id. */
    usageRecord: (requestId) =>
      eventually(() =>
        logs
          .filter((l) => l.message.startsWith("{"))
          .map((l) => JSON.parse(l.message))
          .find((r) => r.request_id === requestId),
      ),
    kv: () => mf.getKVNamespace("EDGEGATE_KV"),
    stop: async () => {
      await mf.dispose();
      rmSync(persist, { recursive: true, force: true });
    },
  };
}

/** An HS256 JWT signed with the test secret. */
export function signJwt(claims, secret = JWT_SECRET) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");
  const head = `${b64({ alg: "HS256", typ: "JWT" })}.${b64(claims)}`;
  return `${head}.${createHmac("sha256", secret).update(head).digest("base64url")}`;
}

/** Reads an SSE body as it arrives: [{at: ms since start, data}]. */
export async function readEvents(response, started = performance.now()) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  const events = [];
  let buffered = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    const at = performance.now() - started;
    buffered += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffered.indexOf("\n\n")) >= 0) {
      const event = buffered.slice(0, end);
      buffered = buffered.slice(end + 2);
      const data = event
        .split("\n")
        .filter((l) => l.startsWith("data:"))
        .map((l) => l.slice(5).trim())
        .join("\n");
      events.push({ at, data });
    }
  }
  return events;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `check` until it returns a truthy value or `ms` pass. */
export async function eventually(check, ms = 3000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value || Date.now() > deadline) return value;
    await sleep(50);
  }
}
