"""``/v1/responses`` relayed as it is to upstreams that speak the Responses API themselves
(``capabilities.responses: native``, Azure OpenAI), with the openai SDK through the real server.

The fakes answer on their own ``/v1/responses`` (``/openai/v1/responses`` for Azure) with OpenAI's
wire shapes; every object and event is checked against OpenAI's published schemas
(tests/contract). The gateway changes only ``model``; usage is counted from the answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.contract.openapi import validate
from tests.fakes import FakeOpenAI
from tests.fakes.azure_upstream import FakeAzure
from tests.harness import RunningServer, make_key, run_server

AZURE_KEY = "azure-key-native-1"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, FakeOpenAI, FakeAzure]]:
    data: Path = tmp_path_factory.mktemp("native")
    with FakeOpenAI(models=["gpt-up"]) as upstream, FakeAzure(api_key=AZURE_KEY, deployments={
        "prod-4o": "gpt-4o-2024-08-06"}) as azure, run_server(
        data,
        providers={"oai": {"type": "openai", "base_url": upstream.base_url},
                   "az": {"type": "azure", "base_url": azure.base_url, "api_key": AZURE_KEY}},
        models=[{"alias": "native", "provider": "oai", "model": "gpt-up", "capabilities": {"responses": "native"}},
                {"alias": "translated", "provider": "oai", "model": "gpt-up"},
                {"alias": "broken", "provider": "oai", "model": "fail-mid-stream",
                 "capabilities": {"responses": "native"}},
                {"alias": "azure-4o", "provider": "az", "model": "prod-4o"}],
    ) as server:
        yield server, upstream, azure


@pytest.fixture
def sdk(stack: tuple[RunningServer, FakeOpenAI, FakeAzure]) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=stack[0].v1, api_key=stack[0].admin_key, max_retries=0, timeout=30) as c:
        yield c


def _sent(upstream: FakeOpenAI | FakeAzure, path: str, marker: str) -> dict[str, Any]:
    bodies = [r.body for r in upstream.requests if r.path == path and marker in json.dumps(r.body)]
    assert len(bodies) == 1, [r.path for r in upstream.requests]
    return dict(bodies[0])


def _events(raw: bytes) -> list[dict[str, Any]]:
    out = []
    for frame in raw.decode().split("\n\n"):
        if frame.strip():
            name, data = frame.split("\n")
            event = json.loads(data.removeprefix("data: "))
            assert name == f"event: {event['type']}"
            validate(event, "ResponseStreamEvent")
            out.append(event)
    assert [e["sequence_number"] for e in out] == list(range(len(out)))
    return out


def test_a_whole_answer_is_relayed_and_the_upstream_gets_the_clients_body(
        stack: tuple[RunningServer, FakeOpenAI, FakeAzure], sdk: openai.OpenAI) -> None:
    server, upstream, _ = stack
    tools: Any = [{"type": "web_search"}, {"type": "function", "name": "f", "parameters": {"type": "object"}}]
    raw = sdk.responses.with_raw_response.create(
        model="native", input="hello native-n1", instructions="Be brief.", metadata={"k": "v"}, tools=tools,
        max_output_tokens=50, extra_body={"a_new_field": {"nested": [1, 2]}})
    body = raw.http_response.json()
    validate(body, "Response")
    assert "x-switchyard-removed-tools" not in raw.http_response.headers  # the upstream runs its hosted tools
    sent = _sent(upstream, "/v1/responses", "native-n1")
    assert sent == {"model": "gpt-up", "input": "hello native-n1", "instructions": "Be brief.", "metadata": {"k": "v"},
                    "tools": tools, "max_output_tokens": 50, "a_new_field": {"nested": [1, 2]}}
    assert body == upstream.responses_api.stored[body["id"]]["response"]  # as the upstream answered
    assert body["output"][0]["content"][0]["text"] == "echo: hello native-n1"
    assert not [r for r in upstream.requests if r.path == "/v1/chat/completions" and "native-n1" in json.dumps(r.body)]
    row = server.usage_row(raw.http_response.headers["x-request-id"])
    assert (row["endpoint"], row["model"], row["status"]) == ("responses", "native", 200)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (body["usage"]["input_tokens"],
                                                                body["usage"]["output_tokens"])
    assert not row["estimated"]


def test_a_stream_is_relayed_event_for_event(stack: tuple[RunningServer, FakeOpenAI, FakeAzure],
                                             sdk: openai.OpenAI) -> None:
    server, upstream, _ = stack
    body = {"model": "native", "input": "stream native-n2 please", "stream": True}
    with server.http(server.admin_key) as http, http.stream("POST", "/v1/responses", json=body) as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        raw = resp.read()
        request_id = resp.headers["x-request-id"]
    events = _events(raw)
    assert [e["type"] for e in events][:2] == ["response.created", "response.in_progress"]
    done = events[-1]
    assert done["type"] == "response.completed"
    assert done["response"] == upstream.responses_api.stored[done["response"]["id"]]["response"]
    assert "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta") == \
        "echo: stream native-n2 please"
    assert _sent(upstream, "/v1/responses", "native-n2") == {"model": "gpt-up", "input": "stream native-n2 please",
                                                              "stream": True}
    row = server.usage_row(request_id)
    assert (row["endpoint"], row["prompt_tokens"], row["completion_tokens"], row["estimated"]) == (
        "responses", done["response"]["usage"]["input_tokens"], done["response"]["usage"]["output_tokens"], False)
    with sdk.responses.stream(model="native", input="helper native-n3") as s:  # the SDK's own stream helper
        final = s.get_final_response()
    assert final.output_text == "echo: helper native-n3"


def test_state_lives_at_the_upstream(stack: tuple[RunningServer, FakeOpenAI, FakeAzure], sdk: openai.OpenAI) -> None:
    _, upstream, _ = stack
    first = sdk.responses.create(model="native", input="remember native-n4")
    second = sdk.responses.create(model="native", input="and native-n5", previous_response_id=first.id)
    assert _sent(upstream, "/v1/responses", "native-n5")["previous_response_id"] == first.id
    assert second.usage is not None and first.usage is not None
    assert second.usage.input_tokens > first.usage.input_tokens  # the upstream chained them
    assert sdk.responses.retrieve(first.id).output_text == "echo: remember native-n4"  # relayed to the upstream
    before = len(upstream.requests)
    with pytest.raises(openai.NotFoundError) as err:  # an id the gateway never recorded: no upstream call
        sdk.responses.create(model="native", input="x", previous_response_id="resp_unknown")
    error: Any = err.value.body
    assert error["param"] == "previous_response_id" and "resp_unknown' not found" in error["message"]
    assert len(upstream.requests) == before


def test_a_previous_response_of_this_gateway_chains_through_the_translation(
        stack: tuple[RunningServer, FakeOpenAI, FakeAzure], sdk: openai.OpenAI) -> None:
    _, upstream, _ = stack
    mine = sdk.responses.create(model="translated", input="kept here native-n6")
    follow = sdk.responses.create(model="native", input="then native-n7", previous_response_id=mine.id)
    assert follow.output_text == "echo: then native-n7"
    chat = _sent(upstream, "/v1/chat/completions", "native-n7")
    assert [m["content"] for m in chat["messages"]] == ["kept here native-n6", "echo: kept here native-n6",
                                                         "then native-n7"]


def test_a_failure_mid_stream_ends_with_an_error_event(stack: tuple[RunningServer, FakeOpenAI, FakeAzure]) -> None:
    server, _, _ = stack
    with server.http(server.admin_key) as http, http.stream(
            "POST", "/v1/responses", json={"model": "broken", "input": "cut native-n8", "stream": True}) as resp:
        assert resp.status_code == 200
        events = _events(resp.read())
    assert events[-1]["type"] == "error" and events[-1]["code"] == "server_error"
    assert len(events) == 5  # the four the upstream sent, then the error


def test_governance_is_the_same(stack: tuple[RunningServer, FakeOpenAI, FakeAzure]) -> None:
    server, _, _ = stack
    scoped = make_key(server.settings, "native-scoped", allowed_models=["translated"])
    with openai.OpenAI(base_url=server.v1, api_key=scoped, max_retries=0, timeout=30) as c, \
            pytest.raises(openai.NotFoundError):
        c.responses.create(model="native", input="not for this key")
    with server.http(server.admin_key) as http:
        resp = http.post("/v1/responses", json={"model": "native", "input": "x", "api_base": "http://evil"})
        assert resp.status_code == 400 and resp.json()["error"]["param"] == "api_base"
        resp = http.post("/v1/responses", json={"model": "native", "input": [
            {"role": "user", "content": "x", "extra_headers": {"x": "y"}}]})
        assert resp.status_code == 400 and resp.json()["error"]["param"] == "input[0].extra_headers"
        resp = http.post("/v1/responses", json={"model": "native", "input": "x", "max_output_tokens": "many"})
        assert resp.status_code == 400 and resp.json()["error"]["param"] == "max_output_tokens"


def test_azure_openai_responses(stack: tuple[RunningServer, FakeOpenAI, FakeAzure], sdk: openai.OpenAI) -> None:
    server, _, azure = stack
    made = sdk.responses.with_raw_response.create(model="azure-4o", input="hello azure-n9").http_response
    validate(made.json(), "Response")
    assert made.json()["output"][0]["content"][0]["text"] == "echo: hello azure-n9"
    call = [r for r in azure.requests if "azure-n9" in json.dumps(r.body)]
    assert len(call) == 1 and call[0].path == "/openai/v1/responses" and not call[0].query
    assert call[0].body == {"model": "prod-4o", "input": "hello azure-n9"}
    assert call[0].headers["api-key"] == AZURE_KEY
    got = sdk.responses.with_raw_response.retrieve(made.json()["id"]).http_response  # relayed, with the key
    assert got.json()["model"] == "azure-4o" and got.json()["output"] == made.json()["output"]
    fetched = azure.requests[-1]
    assert (fetched.method, fetched.path, fetched.headers["api-key"]) == (
        "GET", f"/openai/v1/responses/{made.json()['id']}", AZURE_KEY)
    with sdk.responses.stream(model="azure-4o", input="stream azure-n10") as s:
        assert s.get_final_response().output_text == "echo: stream azure-n10"
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.admin_key}"}) as http:
        made = http.post("/v1/responses", json={"model": "azure-4o", "input": "usage azure-n11"})
        row_id = made.headers["x-request-id"]
    row = server.usage_row(row_id)
    assert (row["endpoint"], row["model"], row["estimated"]) == ("responses", "azure-4o", False)
