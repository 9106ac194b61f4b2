#!/usr/bin/env python3
"""Measures `aquakv serve` (docs/SERVER.md, numbers in docs/RESULTS.md). Starts the server on a
free loopback port for each measurement and stops it after. Needs the openai package (the venv
tests/serve/serve_openai.sh makes: build/serve-venv/bin/python).

  decode:  aggregate decode tokens/s of 1 and of N concurrent conversations (short distinct
           prompts, --tokens generated each with ignore_eos, sampled), median of --reps runs;
           tokens/s = all generated tokens / wall time of the requests (their few prompt tokens
           included).
  fill:    fills a server under --budget with concurrent conversations of about --ctx tokens
           (a --prompt-tokens prompt, --tokens greedy tokens), counts how many were admitted at once
           (/metrics aquakv_slots_in_use_max; prompts are computed one chunk at a time, so fewer
           decode in one step) and checks every answer equals the answer the
           same conversation gets alone (a second server, no budget, one at a time).
  budget:  conversations of about --ctx tokens under --budget (default 256M): `--capacity` says how
           many fit; that many conversations each send a --prompt-tokens prompt (1 token back),
           then all return at once with one more sentence and decode --tokens tokens each
           (ignore_eos, greedy) as one batch. Reports the aggregate decode tokens/s over the
           server's batched steps (/metrics: generated tokens / decode seconds) and over the
           wall time of the second round, and the largest batch. Idle slots that the budget
           pushes out go to --slot-dir files and come back from them (the server's design).
  ttft:    time to first token of a returning conversation: turn 1 with a long prompt
           (--prompt-tokens of TEXT), its slot moved to disk (--slot-idle-s 0), turn 2 streamed
           (restored from the slot file) against the same turn 2 sent to a server without slot
           files (the whole prompt computed). Median of --reps distinct conversations.

  --backend llama-cpp runs `decode` against llama-cpp-python's OpenAI server instead (same
  model, threads and context; flash attention on; its Python from --llama-python, which needs
  the server extras: fastapi, uvicorn, sse-starlette, starlette-context, pydantic-settings).

Usage: serve_bench.py decode|fill|budget|ttft --bin build/aquakv --model M --kv FORMAT [options]
"""
import argparse
import concurrent.futures
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import openai


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, a, extra):
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log")
        self.llama = getattr(a, "backend", "aquakv") == "llama-cpp"
        if self.llama:
            port = free_port()
            cmd = [os.path.expanduser(a.llama_python), "-m", "llama_cpp.server", "--model", a.model,
                   "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(a.ctx),
                   "--n_threads", str(a.threads), "--n_threads_batch", str(a.threads),
                   "--flash_attn", "true", "--verbose", "false"]
        else:
            cmd = [a.bin, "serve", "-m", a.model, "--port", "0", "--kv", a.kv, "-c", str(a.ctx),
                   "-t", str(a.threads)] + extra
        self.p = subprocess.Popen(cmd, stderr=self.log, stdout=self.log if self.llama else subprocess.DEVNULL)
        for _ in range(3000):
            self.log.seek(0)
            if self.llama:
                m = None
                try:
                    urllib.request.urlopen("http://127.0.0.1:%d/v1/models" % port, timeout=2).read()
                    m = True
                except OSError:
                    pass
            else:
                m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", self.log.read())
            if m:
                break
            if self.p.poll() is not None:
                self.log.seek(0)
                sys.exit("server failed:\n" + self.log.read())
            time.sleep(0.1)
        self.url = "http://127.0.0.1:%s" % (port if self.llama else m.group(1))
        self.client = openai.OpenAI(base_url=self.url + "/v1", api_key="none", timeout=600, max_retries=0)

    def metric(self, name):
        if self.llama:
            return None
        text = urllib.request.urlopen(self.url + "/metrics").read().decode()
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        return None

    def close(self):
        self.p.terminate()
        self.p.wait(60)


def stream_chat(client, messages, **kw):
    """(t_start, t_first_token, t_end, tokens) of one streamed chat completion."""
    t0 = time.perf_counter()
    first, n = None, 0
    for ch in client.chat.completions.create(model="m", messages=messages, stream=True,
                                             stream_options={"include_usage": True}, **kw):
        if ch.choices and ch.choices[0].delta.content and first is None:
            first = time.perf_counter()
        if ch.usage is not None:
            n = ch.usage.completion_tokens
    return t0, first or time.perf_counter(), time.perf_counter(), n


def post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=600) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        sys.exit("request failed: HTTP %d: %s" % (e.code, e.read().decode(errors="replace")))


def decode(a):
    """Plain HTTP (urllib, not streamed) so that the client costs next to nothing on the cores
    the server uses; tokens/s = all generated tokens / wall time of the batch of requests."""
    srv = Server(a, ["--parallel", str(a.concurrent)])
    who = "llama.cpp server" if srv.llama else "kv " + a.kv
    out = {}
    try:
        post(srv.url + "/v1/completions", {"prompt": "Warm-up:", "max_tokens": 4})  # first-use costs
        for n in (1, a.concurrent):
            runs = []
            for rep in range(a.reps):
                def one(i):
                    body = {"prompt": "Story %d of %d:" % (rep, i), "max_tokens": a.tokens, "temperature": 0.8,
                            "seed": 100 * rep + i, "ignore_eos": True}
                    return post(srv.url + "/v1/completions", body)["usage"]["completion_tokens"]
                t0 = time.perf_counter()
                with concurrent.futures.ThreadPoolExecutor(n) as ex:
                    toks = sum(ex.map(one, range(n)))
                runs.append(toks / (time.perf_counter() - t0))
            out[n] = statistics.median(runs)
            print("%s: %d conversation(s): %.1f tok/s aggregate (runs: %s)" %
                  (who, n, out[n], ", ".join("%.1f" % r for r in runs)), flush=True)
        print("%s: ratio %d vs 1: %.2fx (max batch %s)" % (who, a.concurrent, out[a.concurrent] / out[1],
                                                             srv.metric("aquakv_decode_batch_max")))
    finally:
        srv.close()


def fill(a):
    n = a.concurrent
    prompts = [long_prompt(a, 100 + i) for i in range(n)]
    msgs = [[{"role": "user", "content": p}] for p in prompts]
    srv = Server(a, ["--parallel", str(n), "--kv-budget", a.budget, "--max-tokens", str(a.tokens)])
    try:
        with concurrent.futures.ThreadPoolExecutor(n) as ex:
            t0 = time.perf_counter()
            together = list(ex.map(lambda m: srv.client.chat.completions.create(
                model="m", messages=m, max_tokens=a.tokens, temperature=0).choices[0].message.content, msgs))
            wall = time.perf_counter() - t0
        batch = srv.metric("aquakv_decode_batch_max")
        in_use = srv.metric("aquakv_slots_in_use_max")
    finally:
        srv.close()
    one = Server(a, ["--parallel", "1"])
    try:
        alone = [one.client.chat.completions.create(model="m", messages=m, max_tokens=a.tokens,
                                                    temperature=0).choices[0].message.content for m in msgs]
    finally:
        one.close()
    same = sum(x == y for x, y in zip(together, alone))
    print("kv %s, budget %s, -c %d: %d requests, at most %d admitted at once (%d in one decode step), "
          "%d/%d answers equal to alone, %.1f s" % (a.kv, a.budget, a.ctx, n, in_use, batch, same, n, wall), flush=True)


def capacity(a):
    """How many --ctx-token conversations of the format fit --budget (the server measures one)."""
    out = subprocess.run([a.bin, "serve", "-m", a.model, "--kv", a.kv, "-c", str(a.ctx), "-t", str(a.threads),
                          "--kv-budget", a.budget, "--capacity", str(a.ctx)],
                         check=True, capture_output=True, text=True).stdout
    m = re.search(r"holds ([0-9.]+) MiB of KV cache; budget [0-9.]+ MiB holds (\d+)", out)
    if not m:
        sys.exit("unexpected --capacity output: " + out)
    return float(m.group(1)), int(m.group(2))


def budget(a):
    mib, n = capacity(a)
    print("kv %s: one %d-token conversation holds %.2f MiB; %s holds %d" % (a.kv, a.ctx, mib, a.budget, n), flush=True)
    prompts = [long_prompt(a, 200 + i) for i in range(n)]
    with tempfile.TemporaryDirectory() as slots:
        srv = Server(a, ["--parallel", str(n), "--kv-budget", a.budget, "--max-tokens", str(a.tokens),
                         "--slot-dir", slots, "--slot-idle-s", "100000"])
        try:
            t0 = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(n) as ex:
                first = list(ex.map(lambda p: post(srv.url + "/v1/completions",
                                                   {"prompt": p, "max_tokens": 1, "temperature": 0}), prompts))
            fill_s = time.perf_counter() - t0
            ptoks = [r["usage"]["prompt_tokens"] for r in first]
            g0, d0 = srv.metric("aquakv_generated_tokens_total"), srv.metric("aquakv_decode_seconds_total")
            p0 = srv.metric("aquakv_prefill_tokens_total")

            def again(i):  # up to --tokens, within the conversation's --ctx tokens
                body = {"prompt": prompts[i] + first[i]["choices"][0]["text"] + " Tell me more.",
                        "max_tokens": min(a.tokens, a.ctx - ptoks[i] - 16), "temperature": 0, "ignore_eos": True}
                return post(srv.url + "/v1/completions", body)["usage"]
            t0 = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(n) as ex:
                usage = list(ex.map(again, range(n)))
            wall = time.perf_counter() - t0
            gen = sum(u["completion_tokens"] for u in usage)
            dg = srv.metric("aquakv_generated_tokens_total") - g0
            dd = srv.metric("aquakv_decode_seconds_total") - d0
            dp = srv.metric("aquakv_prefill_tokens_total") - p0
            print("kv %s: %d conversations of %d-%d prompt tokens + %d generated (%.0f s to fill); second round: "
                  "%d tokens (%d-%d each) in %.1f s wall = %.1f tok/s aggregate; batched decode steps %.1f tok/s "
                  "(%.0f tokens / %.2f s); %.0f prompt tokens recomputed; max batch %s; slots restored %s; "
                  "live KV %.1f MiB of %s" %
                  (a.kv, n, min(ptoks), max(ptoks), a.tokens, fill_s, gen, min(u["completion_tokens"] for u in usage), max(u["completion_tokens"] for u in usage), wall, gen / wall, dg / dd, dg, dd, dp,
                   srv.metric("aquakv_decode_batch_max"), srv.metric("aquakv_slots_restored_total"),
                   (srv.metric("aquakv_kv_live_bytes") or 0) / 1048576.0, a.budget), flush=True)
        finally:
            srv.close()


def long_prompt(a, i, tok_chars=4.2):
    text = open(a.text, encoding="utf-8").read()
    n = int(a.prompt_tokens * tok_chars)
    start = (i * 7919 * 13) % max(1, len(text) - n)
    return "Read this text.\n\n" + text[start:start + n] + "\n\nWhat is the text about?"


def ttft(a):
    restored, recomputed = [], []
    with tempfile.TemporaryDirectory() as slots:
        srv = Server(a, ["--slot-dir", slots, "--slot-idle-s", "0"])
        fresh = Server(a, [])
        try:
            for rep in range(a.reps):
                first = [{"role": "user", "content": long_prompt(a, rep)}]
                r = srv.client.chat.completions.create(model="m", messages=first, max_tokens=8, temperature=0)
                turn2 = first + [{"role": "assistant", "content": r.choices[0].message.content},
                                 {"role": "user", "content": "Summarize it in one sentence."}]
                for _ in range(600):
                    if (srv.metric("aquakv_slots_on_disk") or 0) >= 1 and (srv.metric("aquakv_slots_idle") or 0) == 0:
                        break
                    time.sleep(0.05)
                t0, t1, _, _ = stream_chat(srv.client, turn2, max_tokens=4, temperature=0)
                restored.append(t1 - t0)
                t0, t1, _, _ = stream_chat(fresh.client, turn2, max_tokens=4, temperature=0)
                recomputed.append(t1 - t0)
                print("kv %s rep %d: prompt %d tokens: restored %.3f s, recomputed %.3f s" %
                      (a.kv, rep, r.usage.prompt_tokens, restored[-1], recomputed[-1]), flush=True)
            print("kv %s: restored from disk %.3f s vs recomputed %.3f s: %.1fx sooner (slots restored: %s)" %
                  (a.kv, statistics.median(restored), statistics.median(recomputed),
                   statistics.median(recomputed) / statistics.median(restored), srv.metric("aquakv_slots_restored_total")))
        finally:
            srv.close()
            fresh.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["decode", "ttft", "fill", "budget"])
    ap.add_argument("--budget", default="0")
    ap.add_argument("--bin", default="build/aquakv")
    ap.add_argument("--backend", choices=["aquakv", "llama-cpp"], default="aquakv")
    ap.add_argument("--llama-python", default="~/.cache/aquakv/ref-venv/bin/python")
    ap.add_argument("--model", required=True)
    ap.add_argument("--kv", default="fp16")
    ap.add_argument("--ctx", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--concurrent", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--prompt-tokens", type=int, default=3000)
    ap.add_argument("--text", default="../shared/data/wikitext-2-raw-test.txt")
    a = ap.parse_args()
    {"decode": decode, "ttft": ttft, "fill": fill, "budget": budget}[a.mode](a)


if __name__ == "__main__":
    main()
