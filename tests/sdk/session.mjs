// A scripted session with the official `openai` Node SDK against one
// edgegate runner, the same steps as session.py, run by the conformance
// suite (tests/src/cases/sdk.rs) with the Node that scripts/setup.sh installs:
//
//   node tests/sdk/session.mjs --runner NAME --base-url http://127.0.0.1:PORT/v1 \
//       --key KEY --limited-key KEY_OF_A_TENANT_WITH_A_BURST_OF_ONE
//
// Prints one line per step and exits non-zero if any step failed.
import assert from "node:assert/strict";
import { parseArgs } from "node:util";
import OpenAI from "openai";
import { VERSION } from "openai/version";

const { values: args } = parseArgs({
  options: {
    runner: { type: "string" },
    "base-url": { type: "string" },
    key: { type: "string" },
    "limited-key": { type: "string" },
  },
});

const client = new OpenAI({ baseURL: args["base-url"], apiKey: args.key, maxRetries: 0, timeout: 30_000 });

async function chat() {
  const answer = await client.chat.completions.create({
    model: "gpt-4o-mini",
    messages: [{ role: "user", content: "Hello from the Node SDK" }],
    max_tokens: 8,
  });
  const text = answer.choices[0].message.content;
  assert.ok(text.includes("echo: Hello from the Node SDK"), text);
  assert.ok(answer.usage.total_tokens > 0, JSON.stringify(answer.usage));
  return `${answer.model}: ${JSON.stringify(text)}`;
}

async function streamWithUsage() {
  const stream = await client.chat.completions.create({
    model: "gpt-4o-mini",
    messages: [{ role: "user", content: "Stream to the Node SDK" }],
    max_tokens: 6,
    stream: true,
    stream_options: { include_usage: true },
  });
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  const text = chunks.map((c) => c.choices[0]?.delta?.content ?? "").join("");
  const usage = chunks.at(-1).usage;
  assert.equal(text.trim().split(/\s+/).length, 6, text);
  assert.ok(usage && usage.completion_tokens === 6, JSON.stringify(chunks.at(-1)));
  assert.ok(chunks.slice(0, -1).every((c) => !c.usage), "usage before the last chunk");
  return `${chunks.length} chunks, ${usage.total_tokens} tokens`;
}

async function embeddings() {
  // The SDK asks for base64 and decodes it.
  const result = await client.embeddings.create({ model: "text-embedding-3-small", input: ["hello", "world"] });
  const vectors = result.data.map((d) => d.embedding);
  assert.equal(vectors.length, 2);
  assert.ok(vectors.every((v) => v.length > 0));
  assert.notDeepEqual(vectors[0], vectors[1]);
  return `${vectors.length} vectors of ${vectors[0].length}`;
}

async function models() {
  const ids = [];
  for await (const model of client.models.list()) ids.push(model.id);
  for (const expected of ["chat", "gpt-4o-mini", "text-embedding-3-small"]) {
    assert.ok(ids.includes(expected), ids.join(", "));
  }
  return ids.join(", ");
}

async function rateLimitThenRetry() {
  const ask = { model: "gpt-4o-mini", messages: [{ role: "user", content: "limited" }], max_tokens: 4 };
  const once = client.withOptions({ apiKey: args["limited-key"], maxRetries: 0 });
  await once.chat.completions.create(ask); // the tenant's burst of one
  let retryAfter;
  try {
    await once.chat.completions.create(ask);
    assert.fail("no RateLimitError once the burst was spent");
  } catch (e) {
    if (!(e instanceof OpenAI.RateLimitError)) throw e;
    retryAfter = Number(e.headers.get("retry-after"));
    assert.ok(retryAfter >= 1, `retry-after ${retryAfter}`);
  }
  const patient = client.withOptions({ apiKey: args["limited-key"], maxRetries: 3 });
  const started = performance.now();
  const { response } = await patient.chat.completions.create(ask).withResponse();
  const waited = (performance.now() - started) / 1000;
  assert.equal(response.status, 200);
  assert.ok(waited >= 0.5, `answered after ${waited.toFixed(2)} s, before Retry-After`);
  return `RateLimitError (Retry-After ${retryAfter} s), then 200 after ${waited.toFixed(1)} s of retrying`;
}

const STEPS = [
  ["chat", chat],
  ["stream: true with usage", streamWithUsage],
  ["embeddings", embeddings],
  ["models list", models],
  ["429 as RateLimitError, retried after Retry-After", rateLimitThenRetry],
];

let failed = 0;
for (const [name, step] of STEPS) {
  try {
    console.log(`sdk-node[${args.runner}] ok    ${name}: ${await step()}`);
  } catch (e) {
    failed += 1;
    console.log(`sdk-node[${args.runner}] FAIL  ${name}: ${e?.name}: ${e?.message}`);
  }
}
console.log(`sdk-node[${args.runner}] openai ${VERSION}: ${STEPS.length - failed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
