"""The official `openai` Python SDK against edgegate in front of a real
model (llama.cpp's server with SmolLM2), run by the conformance suite
(tests/src/cases/real_backend.rs):

    python tests/sdk/real_model.py --base-url http://127.0.0.1:PORT/v1 --key KEY --model smollm2

Prints one line per step and exits non-zero if a step failed.
"""

import argparse
import sys

from openai import OpenAI


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--model", required=True)
    args = parser.parse_args()
    client = OpenAI(base_url=args.base_url, api_key=args.key, max_retries=0, timeout=60)

    answer = client.chat.completions.create(
        model=args.model,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=16,
        temperature=0,
    )
    text = answer.choices[0].message.content
    assert text and text.strip(), answer
    assert answer.usage.prompt_tokens > 0 and answer.usage.completion_tokens > 0, answer.usage
    print(f"chat: {text.strip()!r} ({answer.usage.total_tokens} tokens)")

    pieces = []
    for chunk in client.chat.completions.create(
        model=args.model,
        messages=[{"role": "user", "content": "Count from one to five."}],
        max_tokens=24,
        temperature=0,
        stream=True,
    ):
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
    streamed = "".join(pieces)
    assert streamed.strip(), pieces
    assert len([p for p in pieces if p]) >= 3, pieces
    print(f"stream: {streamed.strip()!r} in {len(pieces)} chunks")

    models = [m.id for m in client.models.list().data]
    assert args.model in models, models
    print(f"models: {args.model} listed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
