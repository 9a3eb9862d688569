"""Local models over HTTP, driven with the official openai SDK: the bundled SmolLM2 (llama.cpp)
and all-MiniLM-L6-v2 (the numpy bert engine, as bundled), validated against OpenAI's spec; stop sequences,
limits, seeds, structured output, queueing, disconnects and the model-management routes."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from tests.contract.openapi import validate
from tests.harness import RunningServer, make_key, run_server
from tests.local.bundled import minilm_dir, smollm2_gguf

CAPITAL = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
STORY = [{"role": "user", "content": "Write a long story about a dragon who learns to cook."}]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    gguf = str(smollm2_gguf())
    with run_server(
        tmp_path_factory.mktemp("local"),
        local_models=[
            {"alias": "smol", "engine": "llamacpp", "model": gguf, "context_length": 2048, "threads": 2},
            {"alias": "smol-tight", "engine": "llamacpp", "model": gguf, "context_length": 64,
             "max_concurrent": 1, "max_queue": 0},
            {"alias": "smol-queue", "engine": "llamacpp", "model": gguf, "context_length": 1024,
             "max_concurrent": 1, "max_queue": 0},
            {"alias": "minilm", "engine": "bert", "model": str(minilm_dir()), "device": "cpu"},
        ],
        memory_budget="2GiB",
    ) as running:
        yield running


def _events(server: RunningServer, body: dict[str, Any]) -> list[Any]:
    out: list[Any] = []
    with server.http(server.admin_key) as http, http.stream("POST", "/v1/chat/completions", json=body,
                                                             timeout=120) as resp:
        assert resp.status_code == 200, resp.read()
        for line in resp.iter_lines():
            if line.startswith("data: "):
                out.append(line[6:] if line[6:] == "[DONE]" else json.loads(line[6:]))
    return out


def test_a_coherent_answer_with_exact_usage_in_openais_shape(server: RunningServer, client: openai.OpenAI) -> None:
    with server.http(server.admin_key) as http:
        resp = http.post("/v1/chat/completions", json={"model": "smol", "messages": CAPITAL, "temperature": 0},
                         timeout=120)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    validate(body, "CreateChatCompletionResponse")
    answer = body["choices"][0]["message"]["content"]
    assert "Paris" in answer
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["model"] == "smol"
    usage = body["usage"]
    assert usage["prompt_tokens"] > 10 and usage["completion_tokens"] > 3
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    row = server.usage_row(resp.headers["x-request-id"])
    assert (row["prompt_tokens"], row["completion_tokens"], row["estimated"]) == (
        usage["prompt_tokens"], usage["completion_tokens"], False)
    # the SDK sees the same
    again = client.chat.completions.create(model="smol", messages=CAPITAL, temperature=0)  # type: ignore[arg-type]
    assert again.choices[0].message.content == answer


def test_streaming_chunks_validate_and_assemble_to_the_whole_answer(server: RunningServer) -> None:
    events = _events(server, {"model": "smol", "messages": CAPITAL, "temperature": 0, "stream": True,
                              "stream_options": {"include_usage": True}})
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    for chunk in chunks:
        validate(chunk, "CreateChatCompletionStreamResponse")
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert "Paris" in text and "\ufffd" not in text
    finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert finish == ["stop"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0


def test_max_tokens_gives_length_and_exact_completion_tokens(client: openai.OpenAI) -> None:
    out = client.chat.completions.create(model="smol", messages=STORY, max_tokens=7, temperature=0)  # type: ignore[arg-type]
    assert out.choices[0].finish_reason == "length"
    assert out.usage is not None and out.usage.completion_tokens == 7


def test_a_stop_sequence_straddling_two_chunks_is_cut_out(server: RunningServer, client: openai.OpenAI) -> None:
    events = _events(server, {"model": "smol", "messages": STORY, "temperature": 0, "max_tokens": 40,
                              "stream": True})
    pieces = [c["choices"][0]["delta"].get("content") or "" for c in events[:-1] if c["choices"]]
    pieces = [p for p in pieces if p]
    # a stop sequence made of the end of one chunk and the start of the next
    i = next(i for i in range(2, len(pieces) - 1) if len(pieces[i]) >= 2 and len(pieces[i + 1]) >= 2)
    stop = pieces[i][-2:] + pieces[i + 1][:2]
    full = "".join(pieces)
    expected = full[: full.index(stop)]
    out = client.chat.completions.create(model="smol", messages=STORY, temperature=0, max_tokens=40,  # type: ignore[arg-type]
                                         stop=[stop])
    assert out.choices[0].message.content == expected
    assert out.choices[0].finish_reason == "stop"
    streamed = _events(server, {"model": "smol", "messages": STORY, "temperature": 0, "max_tokens": 40,
                                "stream": True, "stop": stop})
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in streamed[:-1] if c["choices"])
    assert text == expected and stop not in text


def test_the_same_seed_gives_the_same_answer(client: openai.OpenAI) -> None:
    def ask(seed: int) -> str:
        out = client.chat.completions.create(model="smol", messages=STORY, temperature=1.0, max_tokens=24,  # type: ignore[arg-type]
                                             seed=seed)
        return out.choices[0].message.content or ""

    first = ask(7)
    assert ask(7) == first
    assert any(ask(s) != first for s in (8, 9, 10))


def test_a_prompt_longer_than_the_context_is_a_400(client: openai.OpenAI) -> None:
    long = [{"role": "user", "content": "word " * 200}]
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="smol-tight", messages=long)  # type: ignore[arg-type]
    assert err.value.code == "context_length_exceeded"
    assert "64 tokens" in err.value.message


def test_json_schema_output_parses_and_validates(client: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
                                                "population_millions": {"type": "integer"}},
              "required": ["city", "population_millions"], "additionalProperties": False}
    out = client.chat.completions.create(
        model="smol", messages=[{"role": "user", "content": "Give the capital of France as JSON."}],  # type: ignore[list-item]
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema}},
        temperature=0.7, seed=3,
    )
    assert out.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(out.choices[0].message.content or ""), schema)


def test_a_schema_that_cannot_compile_is_a_400_naming_it(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="smol", messages=CAPITAL,  # type: ignore[arg-type]
            response_format={"type": "json_schema",
                             "json_schema": {"name": "x", "schema": {"type": "object",
                                                                     "properties": {"a": {"type": "nonsense"}}}}},
        )
    assert err.value.code == "invalid_json_schema"
    assert err.value.param == "response_format"


def test_embeddings_have_384_dimensions_and_exact_usage(client: openai.OpenAI) -> None:
    out = client.embeddings.create(model="minilm", input=["The cat sat on the mat.", "A kitten sat on a rug."])
    assert [len(d.embedding) for d in out.data] == [384, 384]
    assert sum(x * x for x in out.data[0].embedding) == pytest.approx(1.0, abs=1e-3)
    assert out.usage.prompt_tokens == out.usage.total_tokens > 10
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="minilm", messages=CAPITAL)  # type: ignore[arg-type]


def test_embedding_input_it_cannot_take_is_a_400_and_long_text_is_truncated(client: openai.OpenAI) -> None:
    for bad in ("", [""], [], [101, 7592, 102], [[101, 102]]):
        with pytest.raises(openai.BadRequestError) as err:
            client.embeddings.create(model="minilm", input=bad)  # type: ignore[arg-type]
        assert err.value.param == "input", bad
    with pytest.raises(openai.BadRequestError) as err:
        client.embeddings.create(model="minilm", input="hello", dimensions=128)
    assert err.value.param == "dimensions" and "384" in err.value.message
    long = client.embeddings.create(model="minilm", input=["word " * 2000, "hello"])
    assert [len(d.embedding) for d in long.data] == [384, 384]
    assert long.usage.prompt_tokens == 256 + 3  # cut at the model's max_seq_length, as it embeds it


def test_a_full_queue_gets_429_with_retry_after_and_a_disconnect_frees_the_slot(server: RunningServer) -> None:
    opened, leave = threading.Event(), threading.Event()
    received: list[int] = []

    def hold() -> None:
        body = {"model": "smol-queue", "messages": STORY, "stream": True, "max_tokens": 900,
                "temperature": 1.0, "seed": 1}
        with server.http(server.admin_key) as http, http.stream("POST", "/v1/chat/completions", json=body,
                                                                 headers={"x-request-id": "held-stream"},
                                                                 timeout=60) as resp:
            lines = resp.iter_lines()
            for line in lines:
                if line.startswith("data: "):
                    received.append(1)
                    opened.set()
                    break
            leave.wait(30)  # the connection closes when the block ends: a disconnect mid-stream

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert opened.wait(60)
        with server.http(server.admin_key) as http:
            busy = http.post("/v1/chat/completions", json={"model": "smol-queue", "messages": CAPITAL,
                                                           "max_tokens": 2})
        assert busy.status_code == 429, busy.text
        assert busy.json()["error"]["type"] == "rate_limit_error"
        assert int(busy.headers["retry-after"]) >= 1
        with server.http(server.admin_key) as http:  # a generation in progress blocks nothing else
            other = http.post("/v1/embeddings", json={"model": "minilm", "input": "still answering"}, timeout=60)
            assert other.status_code == 200, other.text
            held = next(m for m in http.get("/v1/status").json()["models"] if m["id"] == "smol-queue")
            assert held["active"] == 1
    finally:
        leave.set()
        holder.join(30)
    deadline = time.monotonic() + 10
    with server.http(server.admin_key) as http:
        while True:
            status = http.get("/v1/status").json()
            held = next(m for m in status["models"] if m["id"] == "smol-queue")
            if held["active"] == 0:
                break
            assert time.monotonic() < deadline, status
            time.sleep(0.05)
        ok = http.post("/v1/chat/completions", json={"model": "smol-queue", "messages": CAPITAL,
                                                     "max_tokens": 2}, timeout=60)
    assert ok.status_code == 200, ok.text
    assert received
    cut = server.usage_row("held-stream")  # the generation stopped when the client left: far short of 900
    assert cut["status"] == 499 and 0 < cut["completion_tokens"] < 600


def test_load_unload_and_status(server: RunningServer, tmp_path: Path) -> None:
    user = make_key(server.settings, "user")
    with server.http(server.admin_key) as http:
        loaded = http.post("/v1/models/minilm/load", json={"keep_alive": "10m"})
        assert loaded.status_code == 200, loaded.text
        assert loaded.json()["status"] == "loaded" and loaded.json()["memory_bytes"] > 10_000_000
        status = http.get("/v1/status").json()
        row = next(m for m in status["models"] if m["id"] == "minilm")
        assert row["state"] == "loaded" and row["keep_alive_seconds"] == 600
        assert abs(row["last_used_at"] - time.time()) < 60  # wall-clock seconds
        assert status["memory_used_bytes"] >= row["memory_bytes"]
        assert status["memory_free_bytes"] == status["memory_budget_bytes"] - status["memory_used_bytes"]
        assert http.post("/v1/models/minilm/unload").json()["status"] == "unloaded"
        row = next(m for m in http.get("/v1/status").json()["models"] if m["id"] == "minilm")
        assert row["state"] == "unloaded" and row["memory_bytes"] == 0
        bad = http.post("/v1/models/minilm/load", json={"keep_alive": "soon"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "keep_alive"
        assert http.post("/v1/models/nope/load").status_code == 404
    with server.http(user) as http:
        assert http.post("/v1/models/minilm/load").status_code == 403
        assert http.get("/v1/status").status_code == 200
    with httpx.Client(base_url=server.url) as anon:
        assert anon.get("/v1/status").status_code == 401


def test_the_seeds_inference_route_with_a_schema(server: RunningServer) -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 16},
                                                "age": {"type": "integer"}}, "required": ["name", "age"]}
    with server.http(server.admin_key) as http:
        resp = http.post("/v1/inference", json={
            "model_id": "smol", "prompt": "Extract the name and age from: John Smith is 25 years old",
            "json_schema": schema, "temperature": 0.2, "max_tokens": 60}, timeout=120)
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert out["finish_reason"] == "stop"
    jsonschema.validate(out["output"], schema)
    assert json.loads(out["text"]) == out["output"]
    assert out["usage"]["prompt_tokens"] > 0
