#!/usr/bin/env python3
"""Talks to a running reflect-router with the official OpenAI Python client.

Usage: openai_client_check.py BASE_URL MODEL [API_KEY]
Checks: /v1/models lists MODEL; a streamed chat completion arrives in several chunks whose text
equals the non-streamed answer for the same greedy request; stream_options.include_usage gives a
usage chunk whose counts add up; /v1/completions with n=2 and a seed; a bad temperature raises
BadRequestError (400) naming the field. Prints one JSON line with what it saw; exits non-zero
(with the reason on stderr) on the first failed check.
"""
import json
import sys

import openai
from openai import OpenAI


def check(condition, message):
    if not condition:
        print(f"openai_client_check: {message}", file=sys.stderr)
        sys.exit(1)


def main():
    base_url, model = sys.argv[1], sys.argv[2]
    api_key = sys.argv[3] if len(sys.argv) > 3 else "unused"
    client = OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=120)
    report = {}

    models = [entry.id for entry in client.models.list()]
    check(model in models, f"/v1/models lists {models}, not {model}")
    report["models"] = models

    messages = [{"role": "user", "content": "Why is the sky blue?"}]
    chunks = []
    content, reasoning = "", ""
    usage = None
    finish_reason = None
    stream = client.chat.completions.create(model=model, messages=messages, max_tokens=24,
                                            temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    for chunk in stream:
        chunks.append(chunk)
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            content += choice.delta.content or ""
            reasoning += (choice.delta.model_extra or {}).get("reasoning_content") or ""
            finish_reason = choice.finish_reason or finish_reason
    check(len(chunks) >= 3, f"only {len(chunks)} chunks streamed")
    check(finish_reason in ("stop", "length"), f"finish_reason {finish_reason}")
    check(usage is not None, "no usage chunk with include_usage")
    check(usage.completion_tokens > 0 and
          usage.total_tokens == usage.prompt_tokens + usage.completion_tokens,
          f"usage does not add up: {usage}")
    report["stream_chunks"] = len(chunks)
    report["stream_text"] = reasoning + content

    whole = client.chat.completions.create(model=model, messages=messages, max_tokens=24,
                                           temperature=0)
    whole_text = ((whole.choices[0].message.model_extra or {}).get("reasoning_content") or "") + \
        (whole.choices[0].message.content or "")
    check(whole_text == reasoning + content,
          f"streamed text {reasoning + content!r} != non-streamed {whole_text!r}")
    check(whole.usage.completion_tokens == usage.completion_tokens,
          "streamed and non-streamed token counts differ")

    completion = client.completions.create(model=model, prompt="The sky is", max_tokens=8, n=2,
                                           temperature=0.8, seed=7)
    check(sorted(choice.index for choice in completion.choices) == [0, 1],
          f"n=2 gave choices {[choice.index for choice in completion.choices]}")
    again = client.completions.create(model=model, prompt="The sky is", max_tokens=8, n=2,
                                      temperature=0.8, seed=7)
    check([c.text for c in completion.choices] == [c.text for c in again.choices],
          "the same seed gave different completions")
    report["completions"] = [choice.text for choice in completion.choices]

    try:
        client.chat.completions.create(model=model, messages=messages, temperature=-1)
        check(False, "temperature -1 was accepted")
    except openai.BadRequestError as error:
        check(error.status_code == 400, f"status {error.status_code}")
        check("temperature" in str(error), f"error does not name the field: {error}")
        report["bad_request"] = str(error)

    print(json.dumps(report))


if __name__ == "__main__":
    main()
