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


LOOKUP = {"type": "function", "name": "lookup_code", "description": "The secret code of a city.",
          "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30}},
                         "required": ["city"], "additionalProperties": False}, "strict": True}


def test_a_function_call_round_trip(client: openai.OpenAI) -> None:
    """The model must call (tool_choice required): a function_call item whose arguments validate;
    its output sent back (with previous_response_id) gets a final text answer."""
    first = client.responses.with_raw_response.create(
        model="smol", input="What is the code of Oslo?", tools=[LOOKUP], tool_choice="required", temperature=0,
    ).http_response.json()
    strict_response(first)
    assert first["status"] == "completed"
    calls = [item for item in first["output"] if item["type"] == "function_call"]
    assert calls and all(item["type"] == "function_call" for item in first["output"])
    for call in calls:
        assert call["name"] == "lookup_code" and call["call_id"].startswith("call_") and call["status"] == "completed"
        jsonschema.validate(json.loads(call["arguments"]), LOOKUP["parameters"])
    outputs = [{"type": "function_call_output", "call_id": c["call_id"], "output": "The code of Oslo is 4711."}
               for c in calls]
    second = client.responses.with_raw_response.create(  # tool_choice auto: it may call again, but answers
        model="smol", previous_response_id=first["id"], input=outputs, tools=[LOOKUP], temperature=0,
    ).http_response.json()
    strict_response(second)
    assert second["status"] == "completed"
    [message] = second["output"]
    assert message["type"] == "message" and "4711" in message["content"][0]["text"], message
    assert second["usage"]["input_tokens"] > first["usage"]["input_tokens"]  # the call and its output are in it


def test_a_streamed_function_call(server: RunningServer, client: openai.OpenAI) -> None:
    request = {"model": "smol", "input": "What is the code of Oslo?", "tools": [LOOKUP], "tool_choice": "required",
               "temperature": 0, "stream": True}
    with server.http(server.admin_key) as http, http.stream("POST", "/v1/responses", json=request,
                                                            timeout=120) as resp:
        assert resp.status_code == 200
        raw = resp.read().decode()
    events = [json.loads(frame.split("\ndata: ", 1)[1]) for frame in raw.split("\n\n") if frame.strip()]
    for event in events:
        strict_event(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    final = events[-1]
    assert final["type"] == "response.completed"
    calls = final["response"]["output"]
    assert calls and all(c["type"] == "function_call" for c in calls)
    for index, call in enumerate(calls):
        deltas = [e["delta"] for e in events
                  if e["type"] == "response.function_call_arguments.delta" and e["output_index"] == index]
        [done] = [e for e in events if e["type"] == "response.function_call_arguments.done"
                  and e["output_index"] == index]
        assert len(deltas) > 1 and "".join(deltas) == done["arguments"] == call["arguments"]
        jsonschema.validate(json.loads(call["arguments"]), LOOKUP["parameters"])
    whole = client.responses.create(model="smol", input="What is the code of Oslo?", tools=[LOOKUP],  # type: ignore[list-item]
                                    tool_choice="required", temperature=0)
    assert [(c.type, getattr(c, "arguments", None)) for c in whole.output] == [
        ("function_call", c["arguments"]) for c in calls]


def test_a_custom_tool_is_called_with_its_input(client: openai.OpenAI) -> None:
    """A freeform ``custom`` tool is a function of one string to the model; it comes back as a
    custom_tool_call whose input is that string."""
    note = {"type": "custom", "name": "save_note", "description": "Save a short note."}
    out = client.responses.with_raw_response.create(
        model="smol", input="Save a note that says: buy milk.", tools=[note],  # type: ignore[list-item]
        tool_choice={"type": "custom", "name": "save_note"}, temperature=0, max_output_tokens=100,
    ).http_response.json()
    strict_response(out)
    [call] = out["output"]
    assert call["type"] == "custom_tool_call" and call["name"] == "save_note" and call["call_id"].startswith("call_")
    assert isinstance(call["input"], str) and call["input"].strip()
