"""``/v1/responses`` on the bundled SmolLM2 (llama.cpp, in-process), with the openai SDK: a whole
answer, a stream, and ``text.format`` json_schema as constrained decoding. Every object and event
is checked strictly against the SDK's own types."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import openai
import pytest
from pydantic import BaseModel

from tests.harness import RunningServer, run_server
from tests.local.bundled import smollm2_gguf
from tests.protocol.responses_schema import strict_event, strict_response

CAPITAL = "What is the capital of France? Answer in one sentence."


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with run_server(
        tmp_path_factory.mktemp("local-responses"),
        local_models=[{"alias": "smol", "engine": "llamacpp", "model": str(smollm2_gguf()), "context_length": 2048,
                       "threads": 2}],
        memory_budget="1GiB",
    ) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: RunningServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.v1, api_key=server.admin_key, max_retries=0, timeout=120) as sdk:
        yield sdk


def test_a_whole_answer(server: RunningServer, client: openai.OpenAI) -> None:
    raw = client.responses.with_raw_response.create(model="smol", input=CAPITAL, instructions="Answer briefly.",
                                                    temperature=0)
    body = raw.http_response.json()
    strict_response(body)
    assert body["status"] == "completed" and body["model"] == "smol"
    [message] = body["output"]
    assert "Paris" in message["content"][0]["text"]
    usage = body["usage"]
    assert usage["input_tokens"] > 10 and usage["output_tokens"] > 3
    row = server.usage_row(raw.http_response.headers["x-request-id"])
    assert (row["endpoint"], row["prompt_tokens"], row["completion_tokens"], row["estimated"]) == (
        "responses", usage["input_tokens"], usage["output_tokens"], False)
    short = client.responses.create(model="smol", input=CAPITAL, max_output_tokens=3)
    assert short.status == "incomplete" and short.incomplete_details is not None
    assert short.incomplete_details.reason == "max_output_tokens"
    assert short.usage is not None and short.usage.output_tokens == 3


def test_a_stream(server: RunningServer, client: openai.OpenAI) -> None:
    with server.http(server.admin_key) as http, http.stream(
            "POST", "/v1/responses", json={"model": "smol", "input": CAPITAL, "stream": True, "temperature": 0},
            timeout=120) as resp:
        assert resp.status_code == 200
        raw = resp.read().decode()
    events: list[dict[str, Any]] = []
    for frame in raw.split("\n\n"):
        if frame.strip():
            event = json.loads(frame.split("\ndata: ", 1)[1])
            strict_event(event)
            events.append(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    assert len(deltas) > 3
    final = events[-1]
    assert final["type"] == "response.completed"
    assert "".join(deltas) == final["response"]["output"][0]["content"][0]["text"]
    assert "Paris" in "".join(deltas)
    assert final["response"]["usage"]["output_tokens"] > 3
    with client.responses.stream(model="smol", input=CAPITAL, temperature=0) as s:  # the SDK's helper
        assert "Paris" in s.get_final_response().output_text


class City(BaseModel):
    city: str
    population_millions: int


def test_json_schema_is_constrained(client: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
                                                "population_millions": {"type": "integer"}},
              "required": ["city", "population_millions"], "additionalProperties": False}
    out = client.responses.with_raw_response.create(
        model="smol", input="Give the capital of France as JSON.", temperature=0.7,
        text={"format": {"type": "json_schema", "name": "city", "schema": schema, "strict": True}},
    ).http_response.json()
    strict_response(out)
    assert out["status"] == "completed"
    jsonschema.validate(json.loads(out["output"][0]["content"][0]["text"]), schema)
    parsed = client.responses.parse(model="smol", input="Give the capital of France as JSON.", text_format=City)
    assert isinstance(parsed.output_parsed, City)
