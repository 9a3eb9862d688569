"""The transformers engine behind the HTTP API: a tiny model built by the test, served to
concurrent streaming clients (continuous batching), with structured output and keep-alive."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import jsonschema
import openai
import pytest

from tests.contract.openapi import validate
from tests.harness import RunningServer, run_server
from tests.local.tiny_models import build_tiny_llama

HELLO = [{"role": "user", "content": "Tell me about the gateway."}]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    model_dir = build_tiny_llama(tmp_path_factory.mktemp("tiny"))
    with run_server(
        tmp_path_factory.mktemp("tf"),
        local_models=[{"alias": "tiny", "engine": "transformers", "model": str(model_dir), "device": "cpu",
                       "max_batch": 8, "max_queue": 8, "keep_alive": "30m"}],
    ) as running:
        yield running


def test_eight_concurrent_streams_are_served_and_each_is_whole(server: RunningServer) -> None:
    results: dict[int, dict[str, Any]] = {}

    def stream(i: int) -> None:
        chunks: list[Any] = []
        with server.http(server.admin_key) as http, http.stream(
            "POST", "/v1/chat/completions", timeout=120,
            json={"model": "tiny", "messages": HELLO, "stream": True, "max_tokens": 24, "temperature": 0.9,
                  "seed": i, "stream_options": {"include_usage": True}},
        ) as resp:
            assert resp.status_code == 200
            for line in resp.iter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    chunks.append(json.loads(line[6:]))
        results[i] = {"chunks": chunks}

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(results) == list(range(8))
    for got in results.values():
        chunks = got["chunks"]
        for chunk in chunks:
            validate(chunk, "CreateChatCompletionStreamResponse")
        usage = chunks[-1]["usage"]
        finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
        assert finish in (["length"], ["stop"])
        if finish == ["length"]:
            assert usage["completion_tokens"] == 24
    # the same seed alone gives the same text as it did inside the batch of eight
    with openai.OpenAI(base_url=server.v1, api_key=server.admin_key, max_retries=0) as client:
        alone = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=24, temperature=0.9,  # type: ignore[arg-type]
                                               seed=3)
    batched = "".join(c["choices"][0]["delta"].get("content") or ""
                      for c in results[3]["chunks"] if c["choices"])
    assert (alone.choices[0].message.content or "")[:8] == batched[:8]


def test_json_schema_on_the_transformers_engine(server: RunningServer) -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"},
                                                "n": {"type": "integer", "minimum": 0, "maximum": 99},
                                                "tag": {"enum": ["a", "b", "c"]}},
              "required": ["ok", "n", "tag"], "additionalProperties": False}
    with openai.OpenAI(base_url=server.v1, api_key=server.admin_key, max_retries=0) as client:
        for seed in range(3):
            out = client.chat.completions.create(
                model="tiny", messages=HELLO, max_tokens=64, temperature=1.0, seed=seed,  # type: ignore[arg-type]
                response_format={"type": "json_schema", "json_schema": {"name": "r", "schema": schema}},
            )
            assert out.choices[0].finish_reason == "stop"
            jsonschema.validate(json.loads(out.choices[0].message.content or ""), schema)
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(
                model="tiny", messages=HELLO,  # type: ignore[arg-type]
                response_format={"type": "json_schema", "json_schema": {"name": "r", "schema": {"type": "nonsense"}}},
            )
        assert err.value.code == "invalid_json_schema"


def test_status_shows_the_measured_footprint_and_keep_alive(server: RunningServer) -> None:
    with server.http(server.admin_key) as http:
        http.post("/v1/chat/completions", json={"model": "tiny", "messages": HELLO, "max_tokens": 2})
        row = next(m for m in http.get("/v1/status").json()["models"] if m["id"] == "tiny")
    assert row["state"] == "loaded" and row["engine"] == "transformers"
    assert row["memory_bytes"] > 0 and row["keep_alive_seconds"] == 1800
    assert 0 < row["expires_in_seconds"] <= 1800
