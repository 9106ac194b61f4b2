"""Drives a running `aquakv serve` with the official openai package (run by serve_openai.sh).

Checks: /v1/models; chat and text completions, whole and streamed (a greedy stream
concatenates to the whole answer); concurrent clients get the greedy answer each gets alone
and were decoded in one batch (/metrics); a returning conversation is restored from its slot
file; the API key, bad parameters, malformed JSON, an oversized body and an unknown route get
4xx JSON errors; the server stays up throughout.
Usage: openai_client.py BASE_URL API_KEY
"""
import concurrent.futures
import json
import sys
import urllib.error
import urllib.request

import openai

base, key = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base + "/v1", api_key=key, timeout=120, max_retries=0)
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def raw(path, body=None, headers=None, method=None):
    """(status, parsed JSON or text) of a plain HTTP request."""
    h = {"Authorization": "Bearer " + key}
    h.update(headers or {})
    req = urllib.request.Request(base + path, data=body, headers=h, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            status, text = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def metric(name):
    _, text = raw("/metrics")
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


models = client.models.list()
model = models.data[0].id
check(len(models.data) == 1 and model, "/v1/models lists the model: " + model)

GREEDY = dict(temperature=0, max_tokens=24, seed=1)


def chat(prompt, **kw):
    r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}], **{**GREEDY, **kw})
    return r


def chat_stream(prompt):
    parts, finish, usage = [], None, None
    for ch in client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}], stream=True,
                                             stream_options={"include_usage": True}, **GREEDY):
        if ch.usage is not None:
            usage = ch.usage
        for c in ch.choices:
            if c.delta.content:
                parts.append(c.delta.content)
            if c.finish_reason:
                finish = c.finish_reason
    return "".join(parts), finish, usage


r = chat("What is the capital of France?")
text = r.choices[0].message.content
check(bool(text) and r.choices[0].finish_reason in ("stop", "length"), "chat completion: %r" % text[:60])
check(r.usage.prompt_tokens > 5 and 0 < r.usage.completion_tokens <= 24, "usage counts: %s" % r.usage)
s_text, s_finish, s_usage = chat_stream("What is the capital of France?")
check(s_text == text, "greedy stream concatenates to the whole answer")
check(s_finish == r.choices[0].finish_reason and s_usage is not None and s_usage.completion_tokens == r.usage.completion_tokens,
      "stream finish reason and usage chunk")

c = client.completions.create(model=model, prompt="The three primary colors are", **GREEDY)
parts = [ch.choices[0].text for ch in client.completions.create(model=model, prompt="The three primary colors are", stream=True, **GREEDY)
         if ch.choices]
check(bool(c.choices[0].text) and "".join(parts) == c.choices[0].text, "text completion, whole and streamed: %r" % c.choices[0].text[:50])
stop = client.completions.create(model=model, prompt="Count: 1, 2, 3,", temperature=0, max_tokens=20, stop=[","])
check(stop.choices[0].finish_reason == "stop" and "," not in stop.choices[0].text, "stop string ends the text: %r" % stop.choices[0].text)

prompts = ["Name a fruit.", "Write one sentence about the sea.", "What is 2 + 2?", "Say hello in French.",
           "Name a planet.", "Describe a cat in five words."]
alone = [chat(p).choices[0].message.content for p in prompts]
with concurrent.futures.ThreadPoolExecutor(len(prompts)) as ex:
    together = list(ex.map(lambda p: chat(p).choices[0].message.content, prompts))
check(together == alone, "%d concurrent clients get the answers they get alone" % len(prompts))
check((metric("aquakv_decode_batch_max") or 0) >= 2, "they were decoded in one batch (batch max %s)" % metric("aquakv_decode_batch_max"))

# A returning conversation: the first turn's slot went to disk (--slot-idle-s 0), the second
# turn restores its prefix.
first = [{"role": "user", "content": "Give me a name for a dog."}]
a = client.chat.completions.create(model=model, messages=first, **GREEDY).choices[0].message.content
restored_before = metric("aquakv_slots_restored_total") or 0
second = client.chat.completions.create(model=model, messages=first + [{"role": "assistant", "content": a},
                                                                     {"role": "user", "content": "And one for a cat?"}], **GREEDY)
check((metric("aquakv_slots_restored_total") or 0) > restored_before and second.usage.prompt_tokens_details.cached_tokens > 10,
      "returning conversation restored from its slot file (%s cached tokens)" % second.usage.prompt_tokens_details.cached_tokens)

# Errors.
try:
    openai.OpenAI(base_url=base + "/v1", api_key="wrong", max_retries=0).models.list()
    check(False, "a wrong API key is refused")
except openai.AuthenticationError:
    check(True, "a wrong API key is refused (401)")
try:
    chat("x", temperature=5)
    check(False, "temperature 5 is refused")
except openai.BadRequestError as e:
    check("temperature" in str(e), "temperature 5 is refused (400): %s" % str(e)[:80])
try:
    chat("x", max_tokens=10**6)
    check(False, "max_tokens above the server's limit is refused")
except openai.BadRequestError:
    check(True, "max_tokens above the server's limit is refused (400)")
st, body = raw("/v1/chat/completions", b'{"messages": [', {"Content-Type": "application/json"})
check(st == 400 and "not valid JSON" in body["error"]["message"], "malformed JSON: 400 with a message")
st, body = raw("/v1/chat/completions", b'{"messages": "' + b"x" * (2 << 20) + b'"}', {"Content-Type": "application/json"})
check(st == 413 and "error" in body, "oversized body: 413 (%s)" % st)
st, body = raw("/v1/nothing")
check(st == 404 and "error" in body, "unknown route: 404")
st, body = raw("/health", headers={"Authorization": ""})
check(st == 200 and body["status"] == "ok", "/health without a key")
_, m = raw("/metrics")
for name in ["aquakv_requests_total", "aquakv_decode_tokens_per_second", "aquakv_kv_live_bytes{format=",
             "aquakv_slots_in_use", "aquakv_queue_length"]:
    check(name in m, "/metrics has " + name)

print("%d failure(s)" % len(failures))
sys.exit(1 if failures else 0)
