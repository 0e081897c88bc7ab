"""A scripted session with the official `openai` Python SDK against one
edgegate runner, run by the conformance suite (tests/src/cases/sdk.rs):

    python tests/sdk/session.py --runner NAME --base-url http://127.0.0.1:PORT/v1 \
        --key KEY --limited-key KEY_OF_A_TENANT_WITH_A_BURST_OF_ONE

Prints one line per step and exits non-zero if any step failed.
"""

import argparse
import sys
import time

import openai
from openai import OpenAI


def chat(client, _args):
    answer = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Hello from the SDK"}],
        max_tokens=8,
    )
    text = answer.choices[0].message.content
    assert "echo: Hello from the SDK" in text, text
    assert answer.usage.total_tokens > 0, answer.usage
    return f"{answer.model}: {text!r}"


def stream_with_usage(client, _args):
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "Stream to the SDK"}],
            max_tokens=6,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    usage = chunks[-1].usage
    assert text.split() and len(text.split()) == 6, text
    assert usage is not None and usage.completion_tokens == 6, chunks[-1]
    assert all(c.usage is None for c in chunks[:-1]), "usage before the last chunk"
    return f"{len(chunks)} chunks, {usage.total_tokens} tokens"


def embeddings(client, _args):
    # The SDK asks for base64 and decodes it.
    result = client.embeddings.create(model="text-embedding-3-small", input=["hello", "world"])
    vectors = [d.embedding for d in result.data]
    assert len(vectors) == 2 and all(len(v) > 0 for v in vectors), result
    assert vectors[0] != vectors[1]
    return f"{len(vectors)} vectors of {len(vectors[0])}"


def models(client, _args):
    ids = [m.id for m in client.models.list()]
    for expected in ("chat", "gpt-4o-mini", "text-embedding-3-small"):
        assert expected in ids, ids
    return ", ".join(ids)


def rate_limit_then_retry(client, args):
    ask = dict(model="gpt-4o-mini", messages=[{"role": "user", "content": "limited"}], max_tokens=4)
    once = client.with_options(api_key=args.limited_key, max_retries=0)
    once.chat.completions.create(**ask)  # the tenant's burst of one
    try:
        once.chat.completions.create(**ask)
    except openai.RateLimitError as e:
        retry_after = float(e.response.headers["retry-after"])
        assert retry_after >= 1, e.response.headers
    else:
        raise AssertionError("no RateLimitError once the burst was spent")
    patient = client.with_options(api_key=args.limited_key, max_retries=3)
    started = time.monotonic()
    raw = patient.chat.completions.with_raw_response.create(**ask)
    waited = time.monotonic() - started
    assert raw.http_response.status_code == 200
    assert raw.retries_taken >= 1, "answered without a retry"
    assert waited >= 0.5, f"retried after {waited:.2f} s, before Retry-After"
    return f"RateLimitError (Retry-After {retry_after:.0f} s), then 200 after {raw.retries_taken} retry in {waited:.1f} s"


STEPS = [
    ("chat", chat),
    ("stream=True with usage", stream_with_usage),
    ("embeddings", embeddings),
    ("models list", models),
    ("429 as RateLimitError, retried after Retry-After", rate_limit_then_retry),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runner", required=True)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--limited-key", required=True)
    args = parser.parse_args()
    client = OpenAI(base_url=args.base_url, api_key=args.key, max_retries=0, timeout=30)
    failed = 0
    for name, step in STEPS:
        try:
            print(f"sdk[{args.runner}] ok    {name}: {step(client, args)}", flush=True)
        except Exception as e:  # noqa: BLE001 - every failure is reported
            failed += 1
            print(f"sdk[{args.runner}] FAIL  {name}: {type(e).__name__}: {e}", flush=True)
    print(f"sdk[{args.runner}] openai {openai.__version__}: {len(STEPS) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
