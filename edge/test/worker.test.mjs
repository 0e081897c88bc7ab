// The Worker, built by scripts/build-edge.sh, in workerd (Miniflare) against
// simulated regional backends. Run: node --test "edge/test/*.test.mjs" (Node >= 22).
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import {
  ADMIN_KEY,
  JWT_ISSUER,
  JWT_SECRET,
  closedPortUrl,
  eventually,
  readEvents,
  sha256Hex,
  signJwt,
  sleep,
  startBackends,
  startWorker,
} from "./harness.mjs";

// Simulated backends; "au-east" is configured too, on a port nobody listens on.
const REGIONS = ["us-east", "eu-west", "ap-southeast"];
const PLACES = {
  newYork: { latitude: 40.71, longitude: -74.0, continent: "NA", country: "US", colo: "EWR" },
  // Cloudflare sends coordinates as strings.
  paris: { latitude: "48.86", longitude: "2.35", continent: "EU", country: "FR", colo: "CDG" },
  singapore: { latitude: 1.29, longitude: 103.85, continent: "AS", country: "SG", colo: "SIN" },
  sydney: { latitude: -33.87, longitude: 151.21, continent: "OC", country: "AU", colo: "SYD" },
};
const PROMPT = "Say hello to the edge.";
const KEYS = {
  acme: "sk-test-acme",
  tight: "sk-test-tight",
  crowd: "sk-test-crowd",
  meter: "sk-test-meter",
  provisioned: "sk-test-provisioned-in-kv",
};
const EXACT_LIMIT = 50;
const METER_BURST = 100_000;

function gatewayConfig(urls) {
  const tenant = (id, tier) => ({ id, tier, api_key_sha256: [sha256Hex(KEYS[id])] });
  return {
    limits: { max_body_bytes: 65536, max_messages: 64, reservation_ttl_seconds: 120 },
    tiers: {
      pro: { requests_per_minute: 100000, tokens_per_minute: 50000000, max_tokens_cap: 4096 },
      tight: { requests_per_minute: 2, tokens_per_minute: 1000000 },
      // A burst of EXACT_LIMIT that refills one request a minute: no refill during the test.
      exact: { requests_per_minute: 1, request_burst: EXACT_LIMIT, tokens_per_minute: 50000000 },
      // Refills one token a second, so settlement shows in the headers.
      meter: { requests_per_minute: 100000, tokens_per_minute: 60, token_burst: METER_BURST },
    },
    tenants: [
      tenant("acme", "pro"),
      tenant("tight", "tight"),
      tenant("crowd", "exact"),
      tenant("meter", "meter"),
    ],
    jwt_issuers: [
      {
        issuer: JWT_ISSUER,
        audiences: ["edgegate"],
        algorithms: ["HS256"],
        hs256_secret: "JWT_SECRET",
        unlisted_tenant_tier: "pro",
      },
    ],
    models: [
      {
        name: "llama-3.1-8b",
        aliases: ["gpt-4o-mini"],
        context_window: 8192,
        input_usd_per_million: 0.1,
        output_usd_per_million: 0.2,
      },
    ],
    routes: [
      {
        model: "llama-3.1-8b",
        max_attempts: 3,
        timeouts: { connect_ms: 1000, first_byte_ms: 3000, stream_idle_ms: 1500, total_ms: 20000 },
        cache: { enabled: true, ttl_seconds: 300, scope: "tenant" },
      },
    ],
    regions: [
      { name: "us-east", base_url: urls["us-east"], latitude: 39.0, longitude: -77.5, models: ["llama-3.1-8b"] },
      { name: "eu-west", base_url: urls["eu-west"], latitude: 53.3, longitude: -6.3, models: ["llama-3.1-8b"] },
      { name: "ap-southeast", base_url: urls["ap-southeast"], latitude: 1.35, longitude: 103.8, models: ["llama-3.1-8b"] },
      { name: "au-east", base_url: urls["au-east"], latitude: -33.9, longitude: 151.2, models: ["llama-3.1-8b"] },
    ],
    default_location: { latitude: 39.0, longitude: -77.5 },
    admin: { api_key_secret: "EDGEGATE_ADMIN_KEY" },
  };
}

let backends;
let worker;

before(async () => {
  backends = await startBackends(REGIONS);
  const urls = { ...backends.urls, "au-east": await closedPortUrl() };
  worker = await startWorker(gatewayConfig(urls));
});

after(async () => {
  await worker?.stop();
  await backends?.stop();
});

function chat(key, body = {}, { cf = PLACES.newYork, headers = {} } = {}) {
  return worker.mf.dispatchFetch("http://gateway.test/v1/chat/completions", {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json", ...headers },
    body: JSON.stringify({
      model: "llama-3.1-8b",
      messages: [{ role: "user", content: PROMPT }],
      max_tokens: 4,
      ...body,
    }),
    cf,
  });
}

const answerText = (json) => json.choices[0].message.content;
const contentOf = (events) =>
  events
    .filter((e) => e.data && e.data !== "[DONE]")
    .map((e) => JSON.parse(e.data))
    .flatMap((c) => c.choices ?? [])
    .map((c) => c.delta?.content ?? "")
    .join("");

test("API keys: a listed key is served, a wrong one is refused in OpenAI's shape", async () => {
  const ok = await chat(KEYS.acme);
  assert.equal(ok.status, 200);
  assert.match(ok.headers.get("x-request-id"), /^req_[0-9a-f]{32}$/);
  assert.ok(ok.headers.get("x-ratelimit-remaining-requests"));
  assert.ok(ok.headers.get("x-ratelimit-limit-tokens"));
  assert.match(answerText(await ok.json()), /echo/);
  const record = await worker.usageRecord(ok.headers.get("x-request-id"));
  assert.equal(record.tenant, "acme");
  assert.equal(record.region, "us-east");
  assert.equal(record.status, 200);
  assert.ok(record.input_tokens > 0 && record.output_tokens > 0, JSON.stringify(record));

  const models = await worker.mf.dispatchFetch("http://gateway.test/v1/models", {
    headers: { "x-api-key": KEYS.acme },
  });
  assert.equal(models.status, 200);
  assert.ok((await models.json()).data.some((m) => m.id === "gpt-4o-mini"));

  const bad = await chat("sk-not-a-key");
  assert.equal(bad.status, 401);
  const { error } = await bad.json();
  assert.equal(error.type, "authentication_error");
  assert.ok(!JSON.stringify(error).includes("sk-not-a-key"), "never echoes the key");

  const invalid = await chat(KEYS.acme, { messages: "not a list" });
  assert.equal(invalid.status, 400);
  assert.equal((await invalid.json()).error.param, "messages");
});

test("JWT (HS256): a valid token is served; forged and expired ones are 401", async () => {
  const now = Math.floor(Date.now() / 1000);
  const claims = { iss: JWT_ISSUER, aud: "edgegate", sub: "user-7", tenant: "jwt-co", iat: now, exp: now + 600 };
  const ok = await chat(signJwt(claims));
  assert.equal(ok.status, 200, await ok.clone().text());

  const forged = await chat(signJwt(claims, "another-secret-of-at-least-32-bytes!!"));
  assert.equal(forged.status, 401);
  const expired = await chat(signJwt({ ...claims, iat: now - 7200, exp: now - 3600 }));
  assert.equal(expired.status, 401);
});

test("a key provisioned in KV works once its record exists", async () => {
  assert.equal((await chat(KEYS.provisioned)).status, 401);
  const kv = await worker.kv();
  await kv.put(`apikey:${sha256Hex(KEYS.provisioned)}`, JSON.stringify({ tenant: "kv-tenant", tier: "pro" }));
  const ok = await chat(KEYS.provisioned);
  assert.equal(ok.status, 200, await ok.clone().text());
});

function admin(method, path, body) {
  return worker.mf.dispatchFetch(`http://gateway.test${path}`, {
    method,
    headers: { authorization: `Bearer ${ADMIN_KEY}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
}

test("a revocation or a disable holds at the quota object while KV is still stale", async () => {
  assert.equal((await admin("POST", "/admin/v1/tenants", { id: "rt-co", tier: "pro" })).status, 201);
  const made = await admin("POST", "/admin/v1/keys", { tenant: "rt-co", name: "edge" });
  assert.equal(made.status, 201);
  const { id, key } = await made.json();
  const kv = await worker.kv();
  const lookup = `apikey:${sha256Hex(key)}`;
  const fresh = await kv.get(lookup);
  assert.ok(fresh && !fresh.includes(key), "KV holds the key's record, not the key");
  assert.equal((await chat(key)).status, 200);

  // Revoked; KV put back as an edge location far away may still see it.
  assert.equal((await admin("DELETE", `/admin/v1/keys/${id}`)).status, 200);
  await kv.put(lookup, fresh);
  const revoked = await chat(key);
  assert.equal(revoked.status, 401, await revoked.clone().text());

  // The same for a disabled tenant, with a second key.
  const other = await (await admin("POST", "/admin/v1/keys", { tenant: "rt-co", name: "edge-2" })).json();
  const otherLookup = `apikey:${sha256Hex(other.key)}`;
  const before = await kv.get(otherLookup);
  assert.equal((await chat(other.key)).status, 200);
  assert.equal((await admin("POST", "/admin/v1/tenants/rt-co/disable")).status, 200);
  await kv.put(otherLookup, before);
  assert.equal((await chat(other.key)).status, 403);
  assert.equal((await admin("POST", "/admin/v1/tenants/rt-co/enable")).status, 200);
  assert.equal((await chat(other.key)).status, 200);
});

test("a key's new limits hold at the quota object while KV is still stale", async () => {
  assert.equal((await admin("POST", "/admin/v1/tenants", { id: "lim-co", tier: "pro" })).status, 201);
  const { id, key } = await (await admin("POST", "/admin/v1/keys", { tenant: "lim-co", name: "edge" })).json();
  const kv = await worker.kv();
  const lookup = `apikey:${sha256Hex(key)}`;
  const before = await kv.get(lookup);
  assert.equal((await chat(key)).status, 200);
  const patched = await admin("PATCH", `/admin/v1/keys/${id}`, {
    limits: { requests_per_minute: 1, request_burst: 1 },
  });
  assert.equal(patched.status, 200);
  await kv.put(lookup, before);
  assert.equal((await chat(key)).status, 200);
  const limited = await chat(key);
  assert.equal(limited.status, 429);
  assert.match((await limited.json()).error.message, /this API key's requests per minute/);
});

test("an exhausted tier gets 429 with Retry-After and x-ratelimit headers", async () => {
  for (let i = 0; i < 2; i++) assert.equal((await chat(KEYS.tight)).status, 200);
  const limited = await chat(KEYS.tight);
  assert.equal(limited.status, 429);
  assert.ok(Number(limited.headers.get("retry-after")) >= 1);
  assert.equal(limited.headers.get("x-ratelimit-limit-requests"), "2");
  assert.equal(limited.headers.get("x-ratelimit-remaining-requests"), "0");
  assert.match(limited.headers.get("x-request-id"), /^req_/);
  const { error } = await limited.json();
  assert.equal(error.type, "rate_limit_error");
});

test("the Durable Object quota is exact under 200 concurrent requests", async () => {
  const answers = await Promise.all(Array.from({ length: 200 }, () => chat(KEYS.crowd)));
  const statuses = answers.map((r) => r.status);
  await Promise.all(answers.map((r) => r.arrayBuffer()));
  const admitted = statuses.filter((s) => s === 200).length;
  assert.equal(admitted, EXACT_LIMIT, `statuses: ${JSON.stringify(statuses)}`);
  assert.equal(statuses.filter((s) => s === 429).length, 200 - EXACT_LIMIT);
});

test("an unsettled reservation expires by the quota object's alarm", async () => {
  // As if the isolate died mid-stream: reserved straight in the object, never settled.
  const ns = await worker.mf.getDurableObjectNamespace("QUOTA");
  const id = ns.idFromName("orphan-tenant");
  const stub = ns.get(id);
  const limits = {
    requests_per_minute: 10, request_burst: 10, tokens_per_minute: 1000, token_burst: 1000,
    tokens_per_day: null, cost_per_day_micros: null, max_concurrent: 1,
  };
  const reserve = (id) =>
    stub
      .fetch("https://quota.internal/", {
        method: "POST",
        body: JSON.stringify({ op: "reserve", id, limits, amounts: { requests: 1, tokens: 10, cost_micros: 0 }, ttl_ms: 1500 }),
      })
      .then((r) => r.json());
  assert.equal((await reserve("lost")).outcome, "admit");
  assert.equal((await reserve("next")).limit, "concurrency", "the lost one holds the only slot");
  const orphan = () => worker.quotaRow(id.toString());
  const before = orphan();
  assert.ok(before.state.outstanding.lost && before.alarm_ms, JSON.stringify(before));

  const after = await eventually(() => {
    const row = orphan();
    return row.state.outstanding.lost ? null : row;
  }, 5000);
  assert.ok(after, "expired without any request");
  assert.equal(after.alarm_ms, null);
  assert.equal(after.state.tokens.updated_ms, before.state.tokens.updated_ms, "no request touched it");
  assert.equal(after.state.day_tokens, 10, "an expired reservation stays charged");
  assert.equal((await reserve("next")).outcome, "admit");
});

test("the region follows the client's location from request.cf", async () => {
  for (const [place, region] of [
    ["newYork", "us-east"],
    ["paris", "eu-west"],
    ["singapore", "ap-southeast"],
  ]) {
    const r = await chat(KEYS.acme, {}, { cf: PLACES[place] });
    assert.equal(r.status, 200);
    assert.match(answerText(await r.json()), new RegExp(`^\\[${region}\\]`), place);
  }
});

test("cache: MISS, then HIT; a stream replays the hit; sampled requests BYPASS", async () => {
  const body = { temperature: 0, max_tokens: 6, messages: [{ role: "user", content: "cache me" }] };
  const first = await chat(KEYS.acme, body);
  assert.equal(first.headers.get("x-edgegate-cache"), "MISS");
  const original = answerText(await first.json());

  const hit = await eventually(async () => {
    const r = await chat(KEYS.acme, body);
    const json = await r.json();
    return r.headers.get("x-edgegate-cache") === "HIT" ? json : null;
  });
  assert.ok(hit, "a HIT within 3 s");
  assert.equal(answerText(hit), original);

  const replay = await chat(KEYS.acme, { ...body, stream: true });
  assert.equal(replay.headers.get("x-edgegate-cache"), "HIT");
  assert.match(replay.headers.get("content-type"), /text\/event-stream/);
  const events = await readEvents(replay);
  assert.equal(events.at(-1).data, "[DONE]");
  assert.equal(contentOf(events), original);

  const sampled = await chat(KEYS.acme, { ...body, temperature: 0.7 });
  assert.equal(sampled.headers.get("x-edgegate-cache"), "BYPASS");
});

test("streams pass through unbuffered, without the usage chunk the gateway added", async () => {
  await backends.control("us-east", { latency: { base_ms: 5, token_interval_ms: 80 } });
  try {
    const started = performance.now();
    const r = await chat(KEYS.meter, { stream: true, max_tokens: 8 });
    assert.equal(r.status, 200);
    assert.match(r.headers.get("content-type"), /text\/event-stream/);
    const events = await readEvents(r, started);
    assert.equal(events.at(-1).data, "[DONE]");
    const chunks = events.filter((e) => e.data !== "[DONE]").map((e) => JSON.parse(e.data));
    assert.ok(chunks.every((c) => !c.usage), "no usage chunk the client did not ask for");
    // Paced 80 ms apart upstream, so arrivals must be spread out too.
    const content = events.filter((e) => e.data.includes('"content":"'));
    assert.ok(content.length >= 8, `content events: ${content.length}`);
    const spread = content.at(-1).at - content[0].at;
    assert.ok(spread >= 400, `chunks arrived within ${spread.toFixed(0)} ms: buffered`);
    const gaps = content.slice(1).map((e, i) => e.at - content[i].at);
    assert.ok(gaps.filter((g) => g >= 40).length >= 5, `gaps: ${gaps.map(Math.round)}`);
  } finally {
    await backends.control("us-east", { latency: { base_ms: 5, token_interval_ms: 10 } });
  }
});

test("a stream settles the quota with its real usage afterwards", async () => {
  const body = { stream: true, max_tokens: 500, stream_options: { include_usage: true } };
  const first = await chat(KEYS.meter, body);
  const remainingAfterReserve = Number(first.headers.get("x-ratelimit-remaining-tokens"));
  const events = await readEvents(first);
  const usage = events
    .filter((e) => e.data !== "[DONE]")
    .map((e) => JSON.parse(e.data))
    .find((c) => c.usage)?.usage;
  assert.ok(usage, "the client asked for usage, so it sees it");
  // Settlement runs in waitUntil once the stream is over.
  await sleep(300);

  const second = await chat(KEYS.meter, body);
  const remainingNext = Number(second.headers.get("x-ratelimit-remaining-tokens"));
  await second.arrayBuffer();
  // Both requests reserve the same amount; between the two headers only the
  // first one's settlement changed the bucket (plus ~1 token/s of refill).
  const charged = remainingAfterReserve - remainingNext;
  const reservation = METER_BURST - remainingAfterReserve;
  assert.ok(reservation > 500, `reservation ${reservation}`);
  assert.ok(
    Math.abs(charged - usage.total_tokens) <= 3,
    `charged ${charged}, real usage ${usage.total_tokens}, reservation ${reservation}`,
  );
});

test("a failed call releases its reservation", async () => {
  const primed = await chat(KEYS.meter, { max_tokens: 500 });
  await primed.arrayBuffer();
  await sleep(300);
  await backends.control("us-east", { fail_next: { count: 1, status: 400 } });
  const failed = await chat(KEYS.meter, { max_tokens: 500 });
  assert.equal(failed.status, 400);
  assert.equal((await failed.json()).error.code, "upstream_error");
  const remainingWhileReserved = Number(failed.headers.get("x-ratelimit-remaining-tokens"));
  await sleep(300);
  const next = await chat(KEYS.meter, { max_tokens: 500 });
  await next.arrayBuffer();
  // Released: the next request finds the bucket as the failed one did.
  const remainingNext = Number(next.headers.get("x-ratelimit-remaining-tokens"));
  assert.ok(Math.abs(remainingNext - remainingWhileReserved) <= 3, `${remainingWhileReserved} then ${remainingNext}`);
});

test("a stalled stream ends with an OpenAI error event after the idle timeout", async () => {
  await backends.control("us-east", { stall_after_chunks: 3 });
  try {
    const started = performance.now();
    const r = await chat(KEYS.acme, { stream: true, max_tokens: 20 });
    assert.equal(r.status, 200);
    const events = await readEvents(r, started);
    const last = JSON.parse(events.at(-1).data);
    assert.equal(last.error.code, "upstream_timeout", JSON.stringify(last));
    assert.ok(events.at(-1).at >= 1400, `ended after ${events.at(-1).at.toFixed(0)} ms`);
  } finally {
    await backends.control("us-east", { stall_after_chunks: null });
  }
});

test("one Durable Object call on a request's response path; settling follows the response", async () => {
  const ns = await worker.mf.getDurableObjectNamespace("QUOTA");
  const stub = ns.get(ns.idFromName("meter"));
  const served = async () =>
    (await (await stub.fetch("https://quota.internal/", { method: "POST", body: '{"op":"stats"}' })).json()).commands;
  const warm = await chat(KEYS.meter);
  await warm.arrayBuffer();
  const idle = await eventually(async () => {
    const n = await served();
    await sleep(100);
    return n === (await served()) ? n : null;
  }, 3000);
  assert.ok(idle >= 1, `the warm-up request was served by this object: ${idle}`);

  // A stream held open by the backend: reserved, not yet settled, while it flows.
  await backends.control("us-east", { stall_after_chunks: 3 });
  try {
    const streamed = await chat(KEYS.meter, { stream: true, max_tokens: 20, temperature: 0.9 });
    assert.equal(streamed.headers.get("x-edgegate-cache"), "BYPASS");
    assert.equal(streamed.status, 200);
    const reader = streamed.body.getReader();
    assert.ok((await reader.read()).value.length > 0, "the first chunk arrived");
    assert.equal(await served(), idle + 1, "the open stream made one call: its reserve");
    while (!(await reader.read()).done);
    const after = await eventually(async () => ((await served()) === idle + 2 ? idle + 2 : null), 5000);
    assert.equal(after, idle + 2, "the settle ran once the stream had ended");
  } finally {
    await backends.control("us-east", { stall_after_chunks: null });
  }
});

test("failover: a down or unreachable nearest region, then the next one answers", async () => {
  await backends.control("eu-west", { down: true });
  try {
    const seen = (await backends.stats("eu-west")).requests_received;
    const first = await chat(KEYS.acme, {}, { cf: PLACES.paris });
    assert.equal(first.status, 200);
    assert.match(answerText(await first.json()), /^\[us-east\]/);
    const record = await worker.usageRecord(first.headers.get("x-request-id"));
    assert.equal(record.attempts, 2);
    assert.equal((await backends.stats("eu-west")).requests_received, seen + 1);
    // The failure marked eu-west in this isolate: it is no longer tried first.
    const second = await chat(KEYS.acme, {}, { cf: PLACES.paris });
    assert.match(answerText(await second.json()), /^\[us-east\]/);
    assert.equal((await backends.stats("eu-west")).requests_received, seen + 1);
  } finally {
    await backends.control("eu-west", { down: false });
  }

  // au-east refuses connections; ap-southeast is the next nearest to Sydney.
  const sydney = await chat(KEYS.acme, {}, { cf: PLACES.sydney });
  assert.equal(sydney.status, 200);
  assert.match(answerText(await sydney.json()), /^\[ap-southeast\]/);
  assert.equal((await worker.usageRecord(sydney.headers.get("x-request-id"))).attempts, 2);
});

test("the cron probes every region and writes the health board to KV", async () => {
  await backends.control("ap-southeast", { down: true });
  try {
    const worker_ = await worker.mf.getWorker();
    await worker_.scheduled({ cron: "* * * * *", scheduledTime: new Date() });
    const kv = await worker.kv();
    const board = await eventually(() => kv.get("health:regions", "json"));
    assert.ok(board, "health:regions written");
    assert.deepEqual(Object.keys(board.regions).sort(), [...REGIONS, "au-east"].sort());
    assert.equal(board.regions["ap-southeast"].consecutive_failures, 1);
    assert.equal(board.regions["au-east"].consecutive_failures, 1);
    assert.equal(board.regions["us-east"].consecutive_failures, 0);
    assert.equal(typeof board.regions["us-east"].latency_ms, "number");
    for (const region of REGIONS) assert.ok((await backends.stats(region)).health_checks >= 1, region);
  } finally {
    await backends.control("ap-southeast", { down: false });
  }
});

test("logs and usage records hold no keys, secrets or prompt text", () => {
  const text = worker.logs.map((l) => l.message).join("\n");
  assert.ok(worker.logs.length > 200);
  for (const secret of [...Object.values(KEYS), JWT_SECRET, PROMPT]) {
    assert.ok(!text.includes(secret), `logs contain ${secret}`);
  }
});
