"""Drive a Palisade gateway with the official OpenAI Python SDK.

Usage: python openai_client.py BASE_URL API_KEY
Prints one JSON object with what the SDK saw; the Rust test asserts on it.
"""
import json
import sys

import openai

base_url = sys.argv[1]
client = openai.OpenAI(base_url=base_url, api_key=sys.argv[2], max_retries=0, timeout=30)
result = {}
try:
    openai.OpenAI(base_url=base_url, api_key="not-a-key", max_retries=0).models.list()
    result["bad_key"] = "accepted"
except openai.AuthenticationError as e:
    result["bad_key"] = {"status": e.status_code, "code": e.code}
result["sdk_version"] = openai.__version__

models = client.models.list()
result["models"] = [m.id for m in models.data]

completion = client.chat.completions.create(
    model="palisade-sim",
    messages=[{"role": "user", "content": "hello"}],
    max_tokens=6,
)
result["chat"] = {
    "content": completion.choices[0].message.content,
    "finish_reason": completion.choices[0].finish_reason,
    "completion_tokens": completion.usage.completion_tokens,
}

pieces = []
usage = None
stream = client.chat.completions.create(
    model="palisade-sim",
    messages=[{"role": "user", "content": "hello"}],
    max_tokens=6,
    stream=True,
    stream_options={"include_usage": True},
)
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        pieces.append(chunk.choices[0].delta.content)
    if chunk.usage is not None:
        usage = chunk.usage.completion_tokens
result["stream"] = {"pieces": pieces, "usage": usage}

embedding = client.embeddings.create(model="palisade-sim", input="hello")
result["embedding_len"] = len(embedding.data[0].embedding)

try:
    client.chat.completions.create(model="palisade-sim", messages=[{"role": "user", "content": "x" * 5000}])
    result["oversized"] = "accepted"
except openai.APIStatusError as e:
    result["oversized"] = {"status": e.status_code, "code": e.code, "type": e.type}

print(json.dumps(result))
