"""The openai SDK's Responses calls through Switchyard, on every kind of model behind it.

The same calls (``responses.create``, ``stream=True``, the ``.stream()`` helper, a function-call
round trip, ``parse()``, a ``previous_response_id`` chain, retrieve, ``input_items`` and delete)
against a fake Anthropic Messages upstream, a fake Gemini upstream and the bundled SmolLM2 GGUF
(llama.cpp, in-process). The fake OpenAI-compatible upstream is covered by tests/http/test_responses.py.
Every Response object and stream event is checked strictly against the SDK's own types.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import openai
import pytest

from tests.clients.test_python_clients import ALIAS, Sent, _anthropic_sent, _fake, _gemini_sent
from tests.fakes._server import FakeServer
from tests.harness import RunningServer, run_server
from tests.local.bundled import smollm2_gguf
from tests.local.test_local_responses import LOOKUP, City
from tests.protocol.responses_schema import strict_event, strict_response

KINDS = ["anthropic", "gemini", "local"]
QUESTION = "What is the code of Oslo?"
TOOL_OUTPUT = "The code of Oslo is 4711."
CAPITAL = "What is the capital of France? Answer in one sentence."
STRUCTURED = "structured-model"


@dataclass
class Target:
    kind: str
    server: RunningServer
    client: openai.OpenAI
    model: str
    parse_model: str
    upstream: FakeServer | None = None  # None for the local model
    read: Callable[[FakeServer], list[Sent]] | None = None
    knobs: dict[str, Any] = field(default_factory=dict)  # greedy decoding on the local model

    def create(self, **kwargs: Any) -> dict[str, Any]:
        """A Response as JSON, validated strictly against the SDK's types."""
        body = self.client.responses.with_raw_response.create(
            model=self.model, **self.knobs, **kwargs).http_response.json()
        strict_response(body)
        return dict(body)

    def sent(self) -> list[Sent]:
        assert self.upstream is not None and self.read is not None
        return self.read(self.upstream)

    def upstream_body(self, marker: str) -> str:
        """The last request the fake upstream got that mentions ``marker``, as JSON text."""
        assert self.upstream is not None
        bodies = [json.dumps(r.body) for r in self.upstream.requests
                  if r.method == "POST" and marker in json.dumps(r.body)]
        assert bodies, f"no upstream request mentions {marker!r}"
        return bodies[-1]


@pytest.fixture(scope="module", params=KINDS)
def target(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    kind: str = request.param
    if kind == "local":
        with run_server(
            tmp_path_factory.mktemp("sdk-kinds-local"),
            local_models=[{"alias": "smol", "engine": "llamacpp", "model": str(smollm2_gguf()),
                           "context_length": 2048, "threads": 2}],
            memory_budget="1GiB",
        ) as server, openai.OpenAI(base_url=server.v1, api_key=server.admin_key, max_retries=0,
                                   timeout=120) as client:
            yield Target(kind, server, client, "smol", "smol", knobs={"temperature": 0})
        return
    fake, provider, model = _fake(kind)
    with fake, run_server(
        tmp_path_factory.mktemp(f"sdk-kinds-{kind}"),
        providers={"up": {**provider, "base_url": fake.base_url}},
        models=[{"alias": ALIAS, "provider": "up", "model": model},
                # the Anthropic type assumes no structured outputs; a model that has them says so
                {"alias": STRUCTURED, "provider": "up", "model": model, "capabilities": {"json_schema": True}}],
    ) as server, openai.OpenAI(base_url=server.v1, api_key=server.admin_key, max_retries=0, timeout=30) as client:
        yield Target(kind, server, client, ALIAS, ALIAS if kind == "gemini" else STRUCTURED, fake,
                     _anthropic_sent if kind == "anthropic" else _gemini_sent)


def _text(response: dict[str, Any]) -> str:
    return "".join(part["text"] for item in response["output"] if item["type"] == "message"
                   for part in item["content"] if part["type"] == "output_text")


def test_create_gives_text(target: Target) -> None:
    made = target.create(input="Say hello to Ada.", instructions="Answer briefly.", max_output_tokens=24)
    assert made["id"].startswith("resp_") and made["model"] == target.model
    assert made["status"] in ("completed", "incomplete") and _text(made).strip()
    assert made["usage"]["input_tokens"] > 0 and made["usage"]["output_tokens"] > 0
    if target.upstream is not None:
        assert _text(made) == "echo: Say hello to Ada."
        [sent] = target.sent()[-1:]
        assert sent.system == "Answer briefly." and sent.last_user == "Say hello to Ada." and not sent.stream


def test_stream_true_deltas_join_to_the_output(target: Target) -> None:
    events = list(target.client.responses.create(model=target.model, input="Say hello to Bob.", stream=True,
                                                 max_output_tokens=24, **target.knobs))
    for event in events:
        strict_event(event.to_dict())
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    final = events[-1].response
    assert text.strip() and text == final.output_text
    if target.upstream is not None:
        assert text == "echo: Say hello to Bob." and target.sent()[-1].stream


def test_stream_helper_final_response_matches_its_events(target: Target) -> None:
    # no token cap: the helper's final response is the one of a response.completed event
    with target.client.responses.stream(model=target.model, input=CAPITAL, **target.knobs) as stream:
        events = list(stream)
        final = stream.get_final_response()
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    [last] = [e for e in events if e.type == "response.completed"]
    assert text.strip() and final.output_text == text and final.id == last.response.id
    assert final.output == last.response.output
    assert target.client.responses.retrieve(final.id).output_text == text
    if target.upstream is not None:
        assert text == f"echo: {CAPITAL}"


def test_a_function_call_round_trip(target: Target) -> None:
    first = target.create(input=QUESTION, tools=[LOOKUP], tool_choice="required")
    calls = [item for item in first["output"] if item["type"] == "function_call"]
    assert calls and all(item["type"] == "function_call" for item in first["output"])
    for call in calls:
        assert call["name"] == "lookup_code" and call["call_id"]
        jsonschema.validate(json.loads(call["arguments"]), LOOKUP["parameters"])
    if target.upstream is not None:
        assert [json.loads(c["arguments"]) for c in calls] == [{"city": "Oslo"}]
        assert target.sent()[-1].tools == ["lookup_code"]
    outputs = [{"type": "function_call_output", "call_id": c["call_id"], "output": TOOL_OUTPUT} for c in calls]
    second = target.create(previous_response_id=first["id"], input=outputs, tools=[LOOKUP])
    [message] = second["output"]
    assert message["type"] == "message" and "4711" in _text(second), second
    if target.upstream is None:  # the call and its output are in the prompt
        assert second["usage"]["input_tokens"] > first["usage"]["input_tokens"]
    else:  # the fakes count prompt words, not tool blocks: read what the upstream got instead
        assert _text(second) == f"tool said: {TOOL_OUTPUT}"
        assert target.sent()[-1].tool_result == TOOL_OUTPUT


def test_parse_gives_a_validated_object(target: Target) -> None:
    parsed = target.client.responses.parse(model=target.parse_model, input="Give the capital of France as JSON.",
                                           text_format=City, **target.knobs)
    assert isinstance(parsed.output_parsed, City)
    assert City.model_validate_json(parsed.output_text) == parsed.output_parsed
    strict_response(target.client.responses.with_raw_response.retrieve(parsed.id).http_response.json())
    if target.upstream is not None:  # the schema reached the provider in its own dialect
        sent = json.loads(target.upstream_body("Give the capital of France as JSON."))
        if target.kind == "anthropic":
            schema = sent["output_config"]["format"]["schema"]
        else:
            assert sent["generationConfig"]["responseMimeType"] == "application/json"
            schema = sent["generationConfig"]["responseJsonSchema"]
        assert set(schema["properties"]) == {"city", "population_millions"}
    if target.kind == "anthropic":  # without the capability declared: a clear 400, nothing sent upstream
        sent_before = len(target.sent())
        with pytest.raises(openai.BadRequestError) as refused:
            target.client.responses.parse(model=ALIAS, input="Give the capital of France as JSON.", text_format=City)
        assert "json_schema" in refused.value.message and len(target.sent()) == sent_before


def test_a_chain_of_three_then_retrieve_items_and_delete(target: Target) -> None:
    one = target.create(input="My name is Ada.", max_output_tokens=16)
    two = target.create(previous_response_id=one["id"], input="I live in Oslo.", max_output_tokens=16)
    three = target.create(previous_response_id=two["id"], input="What is my name?", max_output_tokens=16)
    assert three["previous_response_id"] == two["id"] and _text(three).strip()
    tokens = [r["usage"]["input_tokens"] for r in (one, two, three)]
    assert tokens[0] < tokens[1] < tokens[2], tokens  # the history is sent along each turn
    if target.upstream is not None:
        assert _text(three) == "echo: What is my name?"
        history = target.upstream_body("What is my name?")
        assert "My name is Ada." in history and "echo: My name is Ada." in history and "I live in Oslo." in history
    with target.server.http(target.server.admin_key) as http:
        got = http.get(f"/v1/responses/{three['id']}")
    assert got.status_code == 200
    strict_response(got.json())
    assert got.json()["id"] == three["id"] and got.json()["output"] == three["output"]
    items = target.client.responses.input_items.list(three["id"], order="asc")
    [item] = items.data  # this turn's own input; the history lives in the earlier responses
    assert item.type == "message" and item.role == "user"
    assert item.content[0].text == "What is my name?"  # type: ignore[union-attr]
    target.client.responses.delete(three["id"])
    with pytest.raises(openai.NotFoundError):
        target.client.responses.retrieve(three["id"])
    assert target.client.responses.retrieve(two["id"]).id == two["id"]  # the rest of the chain stays
