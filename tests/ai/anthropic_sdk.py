"""Anthropic's own Python SDK against the AI relay: a streamed and a non-streamed Messages call.

Reads ANTHROPIC_BASE_URL and ANTHROPIC_API_KEY as any client in a project's environment does,
and the model and prompt from OODA_MODEL and OODA_PROMPT; prints what it got as one JSON line.
"""
import json
import os

import anthropic

client = anthropic.Anthropic(max_retries=0, timeout=30)
model = os.environ["OODA_MODEL"]
prompt = os.environ["OODA_PROMPT"]
asked = {"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": prompt}]}

with client.messages.stream(**asked) as stream:
    streamed = "".join(stream.text_stream)
    final = stream.get_final_message()

created = client.messages.create(**asked, extra_headers={"anthropic-beta": "ooda-test-beta"})
print(json.dumps({
    "streamed": streamed,
    "streamed_usage": {"input": final.usage.input_tokens, "output": final.usage.output_tokens},
    "created": created.content[0].text,
    "created_usage": {"input": created.usage.input_tokens, "output": created.usage.output_tokens},
    "sdk": anthropic.__version__,
}))
