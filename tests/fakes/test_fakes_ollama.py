"""FakeOllama speaks Ollama's native API: NDJSON streaming by default, tool calls with object
arguments, ``format``, ``keep_alive``, and the model-listing endpoints."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fakes import FakeOllama

HELLO = [{"role": "user", "content": "hello there"}]
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
METRICS = {"total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration", "eval_count",
           "eval_duration"}


@pytest.fixture(scope="module")
def up() -> Iterator[FakeOllama]:
    with FakeOllama() as fake:
        yield fake


@pytest.fixture
def http(up: FakeOllama) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=up.base_url, timeout=10) as client:
        yield client


def ndjson(http: httpx.Client, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    with http.stream("POST", path, json=body) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"] == "application/x-ndjson"
        return [json.loads(line) for line in resp.iter_lines() if line]


def test_chat_streams_ndjson_by_default(up: FakeOllama, http: httpx.Client) -> None:
    lines = ndjson(http, "/api/chat", {"model": "llama3.2:1b", "messages": HELLO, "options": {"temperature": 0}})
    assert [line["message"]["content"] for line in lines[:-1]] == ["echo:", " hello", " there"]
    assert all(line["done"] is False and line["model"] == "llama3.2:1b" and line["created_at"] for line in lines[:-1])
    final = lines[-1]
    assert final["done"] is True and final["done_reason"] == "stop" and METRICS <= final.keys()
    assert final["message"] == {"role": "assistant", "content": ""}
    assert (final["prompt_eval_count"], final["eval_count"]) == (2, 3)
    assert up.last_request.body["options"] == {"temperature": 0}


def test_chat_non_stream(http: httpx.Client) -> None:
    body = http.post("/api/chat", json={"model": "llama3.2", "messages": HELLO, "stream": False}).json()
    assert body["message"] == {"role": "assistant", "content": "echo: hello there"}
    assert body["done"] is True and body["done_reason"] == "stop" and METRICS <= body.keys()
    capped = http.post("/api/chat", json={"model": "m", "messages": HELLO, "stream": False,
                                          "options": {"num_predict": 1}}).json()
    assert capped["message"]["content"] == "echo:" and capped["done_reason"] == "length"
    stopped = http.post("/api/chat", json={"model": "m", "messages": HELLO, "stream": False,
                                           "options": {"stop": [" there"]}}).json()
    assert stopped["message"]["content"] == "echo: hello"


def test_chat_tools_use_object_arguments(http: httpx.Client) -> None:
    body = http.post("/api/chat", json={"model": "m", "messages": HELLO, "tools": [TOOL], "stream": False}).json()
    assert body["message"]["tool_calls"] == [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]
    lines = ndjson(http, "/api/chat", {"model": "m", "messages": HELLO, "tools": [TOOL]})
    assert lines[0]["message"]["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}
    assert lines[-1]["done"] is True
    follow = [*HELLO, body["message"], {"role": "tool", "content": "sunny"}]
    answer = http.post("/api/chat", json={"model": "m", "messages": follow, "tools": [TOOL], "stream": False})
    assert answer.json()["message"]["content"] == "tool said: sunny"


def test_chat_format(http: httpx.Client) -> None:
    as_json = http.post("/api/chat", json={"model": "m", "messages": HELLO, "format": "json", "stream": False})
    assert json.loads(as_json.json()["message"]["content"])["ok"] is True
    schema = {"type": "object", "properties": {"age": {"type": "integer"}, "tags": {"type": "array",
              "items": {"type": "string", "enum": ["a", "b"]}}}, "required": ["age", "tags"]}
    shaped = http.post("/api/chat", json={"model": "m", "messages": HELLO, "format": schema, "stream": False})
    assert json.loads(shaped.json()["message"]["content"]) == {"age": 1, "tags": ["a"]}


def test_load_and_unload_with_keep_alive(up: FakeOllama, http: httpx.Client) -> None:
    load = http.post("/api/chat", json={"model": "loader", "messages": []}).json()
    assert load["done_reason"] == "load"
    assert "loader:latest" in [m["name"] for m in http.get("/api/ps").json()["models"]]
    unload = http.post("/api/generate", json={"model": "loader", "keep_alive": 0}).json()
    assert unload["done_reason"] == "unload" and unload["response"] == ""
    assert "loader:latest" not in [m["name"] for m in http.get("/api/ps").json()["models"]]


def test_generate(http: httpx.Client) -> None:
    body = http.post("/api/generate", json={"model": "m", "prompt": "why is it", "stream": False}).json()
    assert body["response"] == "echo: why is it" and body["done"] is True and body["context"]
    assert body["prompt_eval_count"] == 3 and METRICS <= body.keys()
    lines = ndjson(http, "/api/generate", {"model": "m", "prompt": "why"})
    assert "".join(line["response"] for line in lines) == "echo: why"
    assert lines[-1]["done"] is True and lines[-1]["done_reason"] == "stop"


def test_embed(http: httpx.Client) -> None:
    one = http.post("/api/embed", json={"model": "nomic-embed-text", "input": "hello"}).json()
    two = http.post("/api/embed", json={"model": "nomic-embed-text", "input": ["hello", "big world"]}).json()
    assert len(one["embeddings"]) == 1 and len(two["embeddings"]) == 2
    assert one["embeddings"][0] == two["embeddings"][0] and len(one["embeddings"][0]) == 8
    assert two["prompt_eval_count"] == 3 and two["model"] == "nomic-embed-text"
    legacy = http.post("/api/embeddings", json={"model": "nomic-embed-text", "prompt": "hello"}).json()
    assert legacy["embedding"] == one["embeddings"][0]
    assert http.post("/api/embed", json={"model": "e", "input": [1, 2]}).status_code == 400


def test_listing_endpoints() -> None:
    with FakeOllama(models=["llama3.2", "nomic-embed-text:v1.5"]) as fake, httpx.Client(base_url=fake.base_url) as http:
        tags = http.get("/api/tags").json()["models"]
        assert [m["name"] for m in tags] == ["llama3.2:latest", "nomic-embed-text:v1.5"]
        for model in tags:
            assert {"name", "model", "modified_at", "size", "digest", "details"} <= model.keys()
            assert {"format", "family", "parameter_size", "quantization_level"} <= model["details"].keys()
        assert http.get("/api/ps").json() == {"models": []}
        http.post("/api/chat", json={"model": "llama3.2:latest", "messages": HELLO, "stream": False})
        ps = http.get("/api/ps").json()["models"]
        assert [m["name"] for m in ps] == ["llama3.2:latest"] and ps[0]["expires_at"] and ps[0]["size_vram"]
        assert http.get("/api/version").json() == {"version": fake.version}
        assert http.get("/").text == "Ollama is running"
        show = http.post("/api/show", json={"model": "nomic-embed-text:v1.5"}).json()
        assert show["capabilities"] == ["embedding"] and show["details"]["family"] == "bert"
        missing = http.post("/api/chat", json={"model": "mistral", "messages": HELLO})
        assert missing.status_code == 404
        assert missing.json() == {"error": 'model "mistral" not found, try pulling it first'}


def test_errors(http: httpx.Client) -> None:
    resp = http.post("/api/chat", json={"model": "error-500", "messages": HELLO})
    assert resp.status_code == 500 and resp.json()["error"]
    busy = http.post("/api/chat", json={"model": "error-503", "messages": HELLO})
    assert busy.status_code == 503 and busy.headers["retry-after"] == "3"
    assert http.post("/api/chat", json={"messages": HELLO}).json() == {"error": "model is required"}


def test_disconnect_and_mid_stream_failure(up: FakeOllama, http: httpx.Client) -> None:
    up.reset()
    with http.stream("POST", "/api/chat", json={"model": "slow-stream", "messages": HELLO}) as resp:
        for i, _line in enumerate(resp.iter_lines()):
            if i == 1:
                break
    assert up.wait_for_disconnects(1, timeout=2.0)
    seen: list[str] = []
    with (
        pytest.raises(httpx.RemoteProtocolError),
        http.stream("POST", "/api/chat", json={"model": "fail-mid-stream", "messages": HELLO}) as resp,
    ):
        for line in resp.iter_lines():
            seen.append(json.loads(line)["message"]["content"])
    assert seen == ["this", " stream", " will"] and up.disconnects == 1


def test_think_adds_message_thinking_as_real_ollama_does(http: httpx.Client) -> None:
    whole = http.post("/api/chat", json={"model": "qwen3", "messages": HELLO, "stream": False, "think": True}).json()
    assert whole["message"]["thinking"] and whole["message"]["content"] == "echo: hello there"
    lines = ndjson(http, "/api/chat", {"model": "gpt-oss:20b", "messages": HELLO, "think": "high"})
    thinking = "".join(line["message"].get("thinking", "") for line in lines)
    assert thinking == whole["message"]["thinking"]
    assert lines.index(next(x for x in lines if x["message"]["content"])) > 0  # thinking streams first
    off = http.post("/api/chat", json={"model": "qwen3", "messages": HELLO, "stream": False, "think": False}).json()
    assert "thinking" not in off["message"]
    refused = http.post("/api/chat", json={"model": "llama-no-think", "messages": HELLO, "think": True})
    assert refused.status_code == 400 and refused.json() == {"error": '"llama-no-think" does not support thinking'}
    level = http.post("/api/chat", json={"model": "qwen3", "messages": HELLO, "think": "low"})
    assert level.status_code == 400
