// The dashboard in a real browser: Debian's Chromium, driven by
// puppeteer-core. Signs in (first with a wrong key, which must be refused
// on the page), then checks that the page shows what the admin API says:
// the totals of the usage report it is given, and the revoked key as
// revoked, each phase's latency, the tenant's budgets and the replicas'
// health as the reports it is given say.
// Fails on any console error, page error, failed request or
// error status but the wrong key's 401. Prints one JSON line of what it saw.
//
//   node dashboard.mjs --url http://127.0.0.1:8080 --admin-key … --tenant dash-co \
//     --expect '{"usage": <total>, "latency": …, "budgets": …, "regions": …}' \
//     --revoked key_… --active key_… \
//     --screenshot out.png

import { parseArgs } from "node:util";
import puppeteer from "puppeteer-core";

const { values: args } = parseArgs({
  options: {
    url: { type: "string" },
    "admin-key": { type: "string" },
    tenant: { type: "string" },
    expect: { type: "string" },
    revoked: { type: "string" },
    active: { type: "string" },
    screenshot: { type: "string" },
  },
});
for (const name of ["url", "admin-key", "tenant", "expect", "revoked", "active"]) {
  if (!args[name]) throw new Error(`--${name} is required`);
}
// What the admin API answered: the usage report's total, the latency
// report, the tenant's budget report and the regions.
const { usage: expected, latency: expectedLatency, budgets: expectedBudgets, regions: expectedRegions } =
  JSON.parse(args.expect);

function fail(message) {
  console.error(`dashboard: ${message}`);
  process.exitCode = 1;
}

/** The number a tile shows ("1,234", "$0.001234", "12.5%"). */
const number = (text) => Number(text.replace(/[$,%\s]/g, ""));

const browser = await puppeteer.launch({
  executablePath: process.env.EDGEGATE_CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  // Root in CI: Chromium's sandbox needs an unprivileged user.
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
try {
  const page = await browser.newPage();
  await page.setViewport({ width: 1400, height: 1000 });
  const problems = [];
  page.on("console", (m) => m.type() === "error" && problems.push(`console: ${m.text()}`));
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("requestfailed", (r) => problems.push(`request failed: ${r.url()} ${r.failure()?.errorText}`));
  page.on("response", (r) => r.status() >= 400 && problems.push(`${r.status()} from ${r.url()}`));

  const page_url = `${args.url}/dashboard?tenant=${encodeURIComponent(args.tenant)}`;
  const loaded = await page.goto(page_url, { waitUntil: "load" });
  if (loaded.status() !== 200) throw new Error(`/dashboard answered ${loaded.status()}`);
  await page.waitForSelector("#sign-in:not([hidden])");

  // A wrong key: refused on the page, nothing shown. Its 401 (and the
  // console line Chromium writes for it) is the one problem expected.
  const before = problems.length;
  await page.type("#admin-key", "not-the-admin-key");
  await page.click("#sign-in button[type=submit]");
  await page.waitForFunction(() => document.getElementById("sign-in-error").textContent !== "");
  const refusal = await page.$eval("#sign-in-error", (e) => e.textContent);
  if (!/invalid admin key/i.test(refusal)) fail(`a wrong key's message: ${JSON.stringify(refusal)}`);
  if (!(await page.$eval("#board", (e) => e.hidden))) fail("the board shows after a wrong key");

  const refused = problems.splice(before);
  const expected401 = (p) => /^401 from .*\/admin\/v1\/tenants$/.test(p) || /console: .*status of 401/.test(p);
  for (const p of refused.filter((p) => !expected401(p))) problems.push(p);
  await page.type("#admin-key", args["admin-key"]);
  await page.click("#sign-in button[type=submit]");
  await page.waitForSelector("body[data-loaded=true]", { timeout: 15000 });

  const tile = (id) => page.$eval(`[data-testid="${id}"]`, (e) => e.textContent);
  const seen = {
    requests: number(await tile("total-requests")),
    input_tokens: number(await tile("total-input-tokens")),
    output_tokens: number(await tile("total-output-tokens")),
    cost_usd: number(await tile("total-cost")),
    error_rate: await tile("error-rate"),
  };
  for (const name of ["requests", "input_tokens", "output_tokens"]) {
    if (seen[name] !== expected[name]) fail(`${name}: the page shows ${seen[name]}, the ledger ${expected[name]}`);
  }
  if (Math.abs(seen.cost_usd - expected.cost_usd) > 5e-7) {
    fail(`spend: the page shows ${seen.cost_usd}, the ledger ${expected.cost_usd}`);
  }
  const rate = expected.requests ? `${((100 * expected.errors) / expected.requests).toFixed(1)}%` : "–";
  if (seen.error_rate !== rate) fail(`error rate: the page shows ${seen.error_rate}, the ledger ${rate}`);

  // Latency by phase: each phase's requests and p95 as the latency report says.
  seen.latency = {};
  for (const phase of expectedLatency.phases) {
    const cells = await page
      .$$eval(`tr[data-testid="latency-${phase.phase}"] td`, (tds) => tds.map((td) => td.textContent))
      .catch(() => []);
    const [requests, p95] = [number(cells[1] ?? "NaN"), cells[4]];
    seen.latency[phase.phase] = { requests, p95 };
    if (requests !== phase.count) fail(`${phase.phase}: the page shows ${requests} requests, the report ${phase.count}`);
    const want = phase.p95_ms == null ? "–" : `${phase.p95_ms.toLocaleString("en-US", { maximumFractionDigits: 3 })} ms`;
    if (p95 !== want) fail(`${phase.phase}: the page shows p95 ${p95}, the report ${want}`);
  }

  // Budget headroom: each level's requests per minute left, as the report says.
  seen.budgets = {};
  for (const level of expectedBudgets.levels) {
    const id = `budget-${level.level}${level.id ? `-${level.id}` : ""}`;
    const shown = await page.$eval(`tr[data-testid="${id}"] td.requests`, (e) => e.textContent).catch(() => null);
    const r = level.requests_per_minute;
    const want = `${r.remaining.toLocaleString("en-US")} of ${r.burst.toLocaleString("en-US")}`;
    seen.budgets[id] = shown;
    if (shown !== want) fail(`${id}: the page shows ${shown}, the report ${want}`);
  }

  // Regions: every replica, with its health.
  const replicas = expectedRegions.data.flatMap((region) => region.replicas);
  seen.replicas = await page.$$eval("#regions-table tbody tr", (rows) => rows.length);
  if (seen.replicas !== replicas.length) fail(`${seen.replicas} replicas shown, the API lists ${replicas.length}`);
  for (const r of replicas) {
    const health = await page
      .$eval(`tr[data-testid="replica-${r.target}"] td.status`, (e) => e.textContent)
      .catch(() => "(not listed)");
    if (health !== r.health) fail(`replica ${r.target}: the page shows ${health}, the API ${r.health}`);
  }

  const status = (id) =>
    page.$eval(`tr[data-testid="key-${id}"] td.status`, (e) => e.textContent).catch(() => "(not listed)");
  seen.revoked_key = await status(args.revoked);
  seen.active_key = await status(args.active);
  if (seen.revoked_key !== "revoked") fail(`the revoked key shows as ${seen.revoked_key}`);
  if (seen.active_key !== "active") fail(`the active key shows as ${seen.active_key}`);
  seen.charts = await page.$$eval(".charts canvas", (c) => c.length);
  if (seen.charts !== 5) fail(`${seen.charts} charts drawn, not 5`);
  seen.usage_rows = await page.$$eval("#usage-table tbody tr", (r) => r.length);

  if (args.screenshot) await page.screenshot({ path: args.screenshot, fullPage: true });
  for (const p of problems) fail(p);
  console.log(JSON.stringify(seen));
} finally {
  await browser.close();
}
