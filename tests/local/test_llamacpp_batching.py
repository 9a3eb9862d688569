"""Continuous batching and prompt-prefix reuse in the llama.cpp engine, on the bundled SmolLM2 GGUF,
through the real server over HTTP with the official openai SDK: many streams at once, prefix
reuse (exact, and scoped to its owner), cancellation freeing a slot, structured output in a mixed
batch, the KV cache in the memory budget, and long prompts evaluated in chunks between the
running streams' tokens."""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import openai
import pytest

from tests.cli.support import run_cli
from tests.harness import RunningServer, make_key, run_server
from tests.local.bundled import smollm2_gguf

QUESTIONS = ["What is the capital of France?", "Name three colours.", "Count from one to five.",
             "What do bees make?", "Say hello in Spanish.", "What is two plus two?",
             "Name a large ocean.", "What colour is the sky?"]
CAPITALS = [("France", "Paris"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Germany", "Berlin"),
            ("Portugal", "Lisbon"), ("Austria", "Vienna")]
STORY = [{"role": "user", "content": "Write a long story about a dragon who learns to cook."}]
KV_PER_TOKEN = 30 * 3 * (64 + 64) * 2  # SmolLM2-135M: layers x kv heads x (k + v dims) x f16
STEP = 64  # batch_tokens of "smol8": tokens evaluated per step


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    gguf = str(smollm2_gguf())
    common = {"engine": "llamacpp", "model": gguf, "context_length": 1024, "threads": 2, "max_queue": 16}
    with run_server(
        tmp_path_factory.mktemp("batching"),
        local_models=[
            {"alias": "smol8", "parallel": 8, "batch_tokens": STEP, **common},
            {"alias": "smol-off", "parallel": 2, "batch_tokens": STEP, "prefix_cache_scope": "off", **common},
            {"alias": "smol1", "parallel": 1, **common},
        ],
        memory_budget="2GiB",
    ) as running:
        yield running


def sdk(server: RunningServer, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.v1, api_key=key or server.admin_key, max_retries=0, timeout=180)


def status_of(server: RunningServer, model: str) -> dict[str, Any]:
    with server.http(server.admin_key) as http:
        status = http.get("/v1/status").json()
    row: dict[str, Any] = next(m for m in status["models"] if m["id"] == model)
    return defaultdict(int, row)  # a model not loaded yet has no figures: zeros


def stream(client: openai.OpenAI, model: str, messages: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    """A whole stream: its text, finish_reason, usage and number of content chunks."""
    text, finish, usage, chunks = "", None, None, 0
    for chunk in client.chat.completions.create(model=model, messages=messages, stream=True,  # type: ignore
                                                stream_options={"include_usage": True}, **kw):
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                text += choice.delta.content
                chunks += 1
            if choice.finish_reason:
                finish = choice.finish_reason
    return {"text": text, "finish": finish, "usage": usage, "chunks": chunks}


def test_eight_concurrent_streams_complete_in_one_batch_with_exact_usage(server: RunningServer) -> None:
    before = status_of(server, "smol8")
    with sdk(server) as client:
        limits = [40, 6] * 4
        with ThreadPoolExecutor(8) as pool:
            runs = list(pool.map(lambda i: stream(client, "smol8", [{"role": "user", "content": QUESTIONS[i]}],
                                                  temperature=0, max_tokens=limits[i]), range(8)))
    for i, run in enumerate(runs):
        usage = run["usage"]
        assert usage is not None and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
        assert usage.prompt_tokens > 10
        if run["finish"] == "length":
            assert usage.completion_tokens == limits[i], (i, run)
        else:
            assert run["finish"] == "stop" and 0 < usage.completion_tokens < limits[i], (i, run)
        assert run["text"]
    assert len({run["text"] for run in runs}) == 8  # each its own answer
    assert all(run["finish"] == "length" for run in runs[1::2])  # 6 tokens never finish an answer
    after = status_of(server, "smol8")
    assert after["slots"] == 8 and after["slots_busy"] == 0
    generated = after["completion_tokens"] - before["completion_tokens"]
    steps = after["steps"] - before["steps"]
    # batched: far fewer steps than tokens (one at a time would need a step per token at least)
    assert steps < generated / 2, (steps, generated)


def test_greedy_output_is_the_same_with_prefix_reuse_on_and_off(server: RunningServer) -> None:
    # llama.cpp is not bit-exact when the batch or the cache's layout changes (ggml-org/llama.cpp
    # #7052, #6950), so a prompt whose answer the 135M model is unsure of can flip a token with or
    # without reuse: this one holds its answers, so the model is sure of them
    facts = "".join(f"The capital of {country} is {city}. " for country, city in CAPITALS) * 3
    first = [{"role": "system", "content": f"You are a helpful assistant. {facts}Answer in one sentence."},
             {"role": "user", "content": "What is the capital of France?"}]
    with sdk(server) as client:
        answer = client.chat.completions.create(model="smol8", messages=first, temperature=0,  # type: ignore
                                                max_tokens=30).choices[0].message.content
        second = [*first, {"role": "assistant", "content": answer},
                  {"role": "user", "content": "And what is the capital of Italy?"}]
        before = status_of(server, "smol8")
        reused = stream(client, "smol8", second, temperature=0, max_tokens=12)
        after = status_of(server, "smol8")
        cold = stream(client, "smol-off", second, temperature=0, max_tokens=12)
        again = stream(client, "smol-off", second, temperature=0, max_tokens=12)
    # the second turn reused the first turn's prompt from the cache ...
    assert after["prompt_tokens_reused"] - before["prompt_tokens_reused"] > 120
    assert after["prompt_tokens_evaluated"] - before["prompt_tokens_evaluated"] < reused["usage"].prompt_tokens / 2
    assert after["prefix_hits"] == before["prefix_hits"] + 1
    # ... and answered exactly as a model that reuses nothing
    assert reused["text"] == cold["text"] == again["text"] and reused["text"]
    assert reused["usage"].prompt_tokens == cold["usage"].prompt_tokens
    off = status_of(server, "smol-off")
    assert off["prompt_tokens_reused"] == 0 and off["prefix_hits"] == 0
    assert off["prompt_tokens_evaluated"] == 2 * cold["usage"].prompt_tokens


def test_a_cached_prefix_is_reused_only_by_its_owner(server: RunningServer) -> None:
    alice = make_key(server.settings, "alice-1", user_id="alice")
    alice_again = make_key(server.settings, "alice-2", user_id="alice")
    bob = make_key(server.settings, "bob", user_id="bob")
    secret = [{"role": "system", "content": "The launch code is 0000. Never say it. " * 10},
              {"role": "user", "content": "Hello"}]

    def reused_by(key: str) -> int:
        before = status_of(server, "smol8")["prompt_tokens_reused"]
        with sdk(server, key) as client:
            client.chat.completions.create(model="smol8", messages=secret, temperature=0,  # type: ignore
                                           max_tokens=2)
        return int(status_of(server, "smol8")["prompt_tokens_reused"] - before)

    assert reused_by(alice) == 0  # nobody sent it before
    assert reused_by(bob) == 0  # alice's cache is not bob's: evaluated whole
    assert reused_by(alice_again) > 100  # another key of the same user: the same owner
    assert reused_by(bob) > 100  # bob's own cache from his first request


def test_a_cancelled_stream_frees_its_slot_for_the_queued_request(server: RunningServer) -> None:
    """One slot: a long stream holds it, a second request waits; the client leaving the stream
    cancels its generation, and the queued request is served at once (long before 900 tokens)."""
    before = status_of(server, "smol1")
    got_tokens = threading.Event()
    with sdk(server) as client:
        held = client.chat.completions.create(model="smol1", messages=STORY, stream=True,  # type: ignore
                                              max_tokens=900, temperature=1.0, seed=3)
        for chunk in held:
            if chunk.choices and chunk.choices[0].delta.content:
                got_tokens.set()
                break
        assert got_tokens.is_set()
        with ThreadPoolExecutor(1) as pool:
            queued = pool.submit(lambda: client.chat.completions.create(
                model="smol1", messages=[{"role": "user", "content": QUESTIONS[0]}],  # type: ignore
                temperature=0, max_tokens=12))
            held.close()  # the client leaves mid-stream
            answer = queued.result(timeout=120)
    assert answer.choices[0].finish_reason in ("stop", "length") and answer.choices[0].message.content
    after = status_of(server, "smol1")
    assert after["requests"] - before["requests"] == 2 and after["slots_busy"] == 0
    generated = after["completion_tokens"] - before["completion_tokens"]
    assert generated < 450, generated  # the held stream stopped when its client left, far short of 900


SCHEMA = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
                                           "population": {"type": "integer"}},
          "required": ["city", "population"], "additionalProperties": False}


def test_structured_output_holds_in_a_batch_of_constrained_and_free_requests(server: RunningServer) -> None:
    before = status_of(server, "smol8")

    def ask(i: int) -> tuple[int, Any]:
        with sdk(server) as client:
            messages = [{"role": "user", "content": f"Describe a city as JSON. {QUESTIONS[i]}"}]
            if i % 2:
                fmt = {"type": "json_schema", "json_schema": {"name": "city", "schema": SCHEMA, "strict": True}}
                return i, client.chat.completions.create(model="smol8", messages=messages,  # type: ignore
                                                         response_format=fmt, temperature=0.7, seed=i,
                                                         max_tokens=120)
            return i, client.chat.completions.create(model="smol8", messages=messages,  # type: ignore
                                                     temperature=0.7, seed=i, max_tokens=60)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, range(8)))
    for i, answer in answers:
        content = answer.choices[0].message.content or ""
        if i % 2:
            assert answer.choices[0].finish_reason == "stop", content
            jsonschema.validate(json.loads(content), SCHEMA)
        else:
            assert content
    after = status_of(server, "smol8")
    generated = after["completion_tokens"] - before["completion_tokens"]
    assert after["steps"] - before["steps"] < generated / 2  # decoded together


def test_the_kv_cache_of_every_slot_is_in_the_memory_budget(server: RunningServer) -> None:
    with sdk(server) as client:
        client.chat.completions.create(model="smol8", messages=[{"role": "user", "content": "Hi"}],  # type: ignore
                                       max_tokens=1)
    with server.http(server.admin_key) as http:
        status = http.get("/v1/status").json()
    row = next(m for m in status["models"] if m["id"] == "smol8")
    kv = 8 * 1024 * KV_PER_TOKEN  # 8 slots of 1024 tokens
    assert row["kv_cache_bytes"] == kv
    weights = smollm2_gguf().stat().st_size
    assert row["memory_bytes"] >= 0.95 * weights + kv
    loaded = sum(m["memory_bytes"] for m in status["models"] if m["state"] == "loaded")
    assert status["memory_used_bytes"] == loaded
    one_slot = status_of(server, "smol1")
    if one_slot["state"] == "loaded":  # a model of one slot is charged one slot's cache
        assert one_slot["kv_cache_bytes"] == 1024 * KV_PER_TOKEN


def test_a_long_prompt_arriving_mid_stream_does_not_stall_the_running_streams(server: RunningServer) -> None:
    """Two streams are decoding when a ~900-token prompt arrives: it is evaluated STEP tokens at a
    time, and every step still gives each running stream its next token."""
    long_prompt = [{"role": "user", "content": "Summarise this text. " + "The quick brown fox jumps over the "
                    "lazy dog near the river bank. " * 60}]
    counts = [0, 0]
    started = [threading.Event(), threading.Event()]
    seen_at_start: list[int] = []
    seen_at_end: list[int] = []

    def run(i: int) -> str | None:
        with sdk(server) as client:
            finish = None
            for chunk in client.chat.completions.create(model="smol8", messages=STORY, stream=True,  # type: ignore
                                                        max_tokens=400, temperature=1.0, seed=10 + i):
                if chunk.choices and chunk.choices[0].delta.content:
                    counts[i] += 1
                    if counts[i] >= 5:
                        started[i].set()
                if chunk.choices and chunk.choices[0].finish_reason:
                    finish = chunk.choices[0].finish_reason
            started[i].set()
            return finish

    before = status_of(server, "smol8")
    with ThreadPoolExecutor(2) as pool:
        streams = [pool.submit(run, i) for i in range(2)]
        assert all(e.wait(120) for e in started)
        seen_at_start.extend(counts)
        with sdk(server) as client:
            answer = client.chat.completions.create(model="smol8", messages=long_prompt,  # type: ignore
                                                    max_tokens=1, temperature=0)
        seen_at_end.extend(counts)
        finishes = [s.result(timeout=300) for s in streams]
    after = status_of(server, "smol8")
    prompt_tokens = answer.usage.prompt_tokens if answer.usage else 0
    assert prompt_tokens > 600
    chunks = after["prefill_chunks"] - before["prefill_chunks"]
    assert chunks >= prompt_tokens // STEP  # evaluated a chunk per step ...
    assert after["max_decode_gap_steps"] == 1  # ... and no decoding stream ever missed a step
    # the running streams kept streaming while the long prompt was evaluated
    assert all(end - start >= 3 for start, end in zip(seen_at_start, seen_at_end, strict=True)), (
        seen_at_start, seen_at_end)
    assert all(f in ("stop", "length") for f in finishes)


def test_the_local_engine_metrics_are_exported(server: RunningServer) -> None:
    with sdk(server) as client:
        client.chat.completions.create(model="smol8", messages=[{"role": "user", "content": "Hi"}],  # type: ignore
                                       max_tokens=2)
    with server.http(server.admin_key) as http:
        text = http.get("/metrics").text
    assert 'switchyard_local_slots{model="smol8"} 8.0' in text
    assert 'switchyard_local_prompt_tokens_total{kind="evaluated",model="smol8"}' in text
    assert 'switchyard_local_prompt_tokens_total{kind="reused",model="smol8"}' in text
    assert 'switchyard_local_time_to_first_token_seconds_count{model="smol8"}' in text
    for name in ("batch_occupancy", "tokens_per_second", "prefix_cache_hit_ratio", "slots_busy"):
        assert f'switchyard_local_{name}{{model="smol8"}}' in text


def test_models_ps_shows_the_slots_and_the_prefix_cache(server: RunningServer, tmp_path: Path) -> None:
    with sdk(server) as client:
        client.chat.completions.create(model="smol8", messages=[{"role": "user", "content": "Hi"}],  # type: ignore
                                       max_tokens=1)
    result = run_cli("models", "ps", "--url", server.url, "--api-key", server.admin_key, "--data-dir", tmp_path,
                     cwd=tmp_path, env={"COLUMNS": "250"})
    assert result.returncode == 0, result
    row = next(line for line in result.stdout.splitlines() if line.startswith("smol8 "))
    assert "SLOTS" in result.stdout and "PREFIX HITS" in result.stdout
    assert " 0/8 " in row
    ratio = status_of(server, "smol8")
    assert f"{ratio['prefix_hit_ratio']:.0%} of {ratio['requests']}" in row
