"""The OpenAI Responses API (/v1/responses) through the real server, with the official openai SDK.

Every Response object and stream event is checked against the SDK's own types, strictly
(tests/protocol/responses_schema.py): no coercion and no key the schema does not name.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai.types.responses import ResponseItemList
from pydantic import BaseModel, TypeAdapter

from tests.conftest import UPSTREAM_KEY, reset_pg_schema
from tests.fakes import FakeOllama, FakeOpenAI
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.harness import RunningServer, make_key, run_server
from tests.protocol.responses_schema import strict, strict_event, strict_response

WEATHER = {"type": "function", "name": "get_weather", "description": "Weather for a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def rid() -> str:
    return f"resp-{uuid.uuid4().hex[:12]}"


def sent(fake: FakeOpenAI, marker: str) -> dict[str, Any]:
    """The last chat body the fake upstream got whose messages mention ``marker``."""
    bodies = [r.body for r in fake.requests
              if r.path == "/v1/chat/completions" and marker in json.dumps(r.body.get("messages"))]
    assert bodies, f"no upstream request mentions {marker!r}"
    return dict(bodies[-1])


def raw_create(gateway: RunningServer, body: dict[str, Any], key: str | None = None) -> httpx.Response:
    with gateway.http(key or gateway.admin_key) as http:
        return http.post("/v1/responses", json=body)


def raw_events(gateway: RunningServer, body: dict[str, Any], key: str | None = None) -> list[dict[str, Any]]:
    """POST a streaming /v1/responses; every event, each validated strictly against the SDK's types."""
    with gateway.http(key or gateway.admin_key) as http, http.stream(
            "POST", "/v1/responses", json={**body, "stream": True}) as resp:
        assert resp.status_code == 200, resp.read()
        assert resp.headers["content-type"].startswith("text/event-stream")
        raw = resp.read().decode()
    out = []
    for frame in raw.split("\n\n"):
        if not frame.strip():
            continue
        name, data = frame.split("\n")
        assert name.startswith("event: ") and data.startswith("data: "), frame
        event = json.loads(data[6:])
        assert event["type"] == name[7:]
        strict_event(event)
        out.append(event)
    assert [e["sequence_number"] for e in out] == list(range(len(out)))
    return out


@pytest.fixture(scope="module")
def other_key(gateway: RunningServer) -> str:
    return make_key(gateway.settings, "responses-other")


@pytest.fixture
def other(gateway: RunningServer, other_key: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway.v1, api_key=other_key, max_retries=0, timeout=30) as c:
        yield c


# ------------------------------------------------------------------------- create
def test_create_text(client: openai.OpenAI, gateway: RunningServer, fake_openai: FakeOpenAI) -> None:
    request_id = rid()
    raw = client.responses.with_raw_response.create(
        model="gpt-4o-mini", instructions="be brief", input="hello text-r1", max_output_tokens=50,
        temperature=0.5, metadata={"k": "v"}, extra_headers={"x-request-id": request_id})
    assert raw.http_response.headers["x-request-id"] == request_id
    strict_response(raw.http_response.json())
    response = raw.parse()
    assert response.id.startswith("resp_") and response.object == "response" and response.status == "completed"
    assert response.output_text == "echo: hello text-r1" and response.model == "gpt-4o-mini"
    assert response.instructions == "be brief" and response.metadata == {"k": "v"}
    assert response.max_output_tokens == 50 and response.temperature == 0.5
    assert response.usage is not None
    # the fake counts words: "be brief hello text-r1" in, "echo:" "hello" "text-r1" out
    assert (response.usage.input_tokens, response.usage.output_tokens, response.usage.total_tokens) == (4, 3, 7)
    upstream = sent(fake_openai, "hello text-r1")
    assert upstream["messages"] == [{"role": "system", "content": "be brief"},
                                    {"role": "user", "content": "hello text-r1"}]
    assert upstream["max_tokens"] == 50 and upstream["temperature"] == 0.5  # what budgets reserve from
    assert "metadata" not in upstream and "input" not in upstream and "stream" not in upstream
    row = gateway.usage_row(request_id)  # the same gateway call as chat, labelled with the API called
    assert row["endpoint"] == "responses" and row["status"] == 200
    assert (row["prompt_tokens"], row["completion_tokens"]) == (4, 3)
    assert row["key_id"] is not None and not row["streamed"]


def test_stream_true_and_every_event_validates(client: openai.OpenAI, gateway: RunningServer) -> None:
    events = list(client.responses.create(model="gpt-4o-mini", input="hello stream-r2", stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "echo: hello stream-r2"
    final = events[-1].response  # type: ignore[union-attr]
    assert final.output_text == "echo: hello stream-r2" and final.usage is not None and final.usage.output_tokens == 3
    raw = raw_events(gateway, {"model": "gpt-4o-mini", "input": "hello stream-r2b"})
    assert [e["type"] for e in raw] == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        *["response.output_text.delta"] * 3, "response.output_text.done", "response.content_part.done",
        "response.output_item.done", "response.completed"]
    done = raw[-1]["response"]
    assert done["status"] == "completed" and done["usage"]["output_tokens"] == 3
    # stored before the last event was sent: retrievable at once, and the same object
    assert client.responses.retrieve(done["id"]).model_dump(mode="json", exclude_unset=True)["output"] == done["output"]


def test_stream_helper(client: openai.OpenAI) -> None:
    with client.responses.stream(model="gpt-4o-mini", input="hello helper-r3") as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert text == "echo: hello helper-r3" and final.output_text == text and final.status == "completed"


def test_ollama_model(client: openai.OpenAI, fake_ollama: FakeOllama) -> None:
    response = client.responses.create(model="llama", input="hi responses llama")
    assert response.output_text == "echo: hi responses llama"
    with client.responses.stream(model="llama", input="hi streamed llama") as stream:
        final = stream.get_final_response()
    assert final.output_text == "echo: hi streamed llama"
    assert fake_ollama.last_request.path == "/api/chat"


# ---------------------------------------------------------------------- tools
def test_function_call_round_trip(client: openai.OpenAI, gateway: RunningServer, fake_openai: FakeOpenAI) -> None:
    raw = client.responses.with_raw_response.create(model="gpt-4o-mini", input="weather in paris fn-r4",
                                                    tools=[WEATHER])  # type: ignore[list-item]
    strict_response(raw.http_response.json())
    first = raw.parse()
    [call] = first.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Paris"}
    upstream = sent(fake_openai, "fn-r4")
    assert upstream["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather for a city", "parameters": WEATHER["parameters"]}}]
    # stateless: the client sends the call back with its output
    second = client.responses.create(model="gpt-4o-mini", tools=[WEATHER], input=[  # type: ignore[list-item]
        {"role": "user", "content": "weather in paris fn-r4"}, call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21C"}])
    assert second.output_text == "tool said: sunny, 21C"
    messages = sent(fake_openai, "sunny, 21C")["messages"]
    assert messages[1]["tool_calls"][0]["id"] == call.call_id and messages[2] == {
        "role": "tool", "tool_call_id": call.call_id, "content": "sunny, 21C"}
    # stateful: only the output, chained with previous_response_id
    third = client.responses.create(model="gpt-4o-mini", tools=[WEATHER], previous_response_id=first.id,  # type: ignore[list-item]
                                    input=[{"type": "function_call_output", "call_id": call.call_id,
                                            "output": "rainy, 12C"}])
    assert third.output_text == "tool said: rainy, 12C"
    chained = sent(fake_openai, "rainy, 12C")["messages"]
    assert chained[0] == {"role": "user", "content": "weather in paris fn-r4"}
    assert chained[1]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": call.arguments}
    # streamed call events validate too
    events = raw_events(gateway, {"model": "gpt-4o-mini", "input": "weather fn-r4 stream", "tools": [WEATHER]})
    args = "".join(e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta")
    assert json.loads(args) == {"city": "Paris"} and events[-1]["response"]["output"][0]["type"] == "function_call"


def test_hosted_tools_are_removed_and_named(gateway: RunningServer, fake_openai: FakeOpenAI) -> None:
    resp = raw_create(gateway, {"model": "gpt-4o-mini", "input": "hosted-r5",
                                "tools": [{"type": "web_search"}, {"type": "code_interpreter",
                                                                   "container": {"type": "auto"}}]})
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-switchyard-removed-tools"] == "web_search,code_interpreter"
    strict_response(resp.json())
    assert "tools" not in sent(fake_openai, "hosted-r5")
    body = {"model": "gpt-4o-mini", "input": "hosted-r5 stream", "stream": True, "tools": [{"type": "web_search"}]}
    with gateway.http(gateway.admin_key) as http, http.stream("POST", "/v1/responses", json=body) as s:
        assert s.headers["x-switchyard-removed-tools"] == "web_search"
        s.read()


class Weather(BaseModel):
    city: str
    celsius: int


def test_parse_with_pydantic_format(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    parsed = client.responses.parse(model="gpt-4o-mini", input="structured parse-r6", text_format=Weather)
    assert isinstance(parsed.output_parsed, Weather)
    fmt = sent(fake_openai, "parse-r6")["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "Weather"
    assert fmt["json_schema"]["strict"] is True
    assert set(fmt["json_schema"]["schema"]["properties"]) == {"city", "celsius"}


# ---------------------------------------------------------------------- state
def test_previous_response_chain_of_three(client: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    one = client.responses.create(model="gpt-4o-mini", instructions="turn one only", input="first chain-r7")
    two = client.responses.create(model="gpt-4o-mini", previous_response_id=one.id, input="second chain-r7")
    three = client.responses.create(model="gpt-4o-mini", previous_response_id=two.id, input="third chain-r7")
    assert three.previous_response_id == two.id and three.output_text == "echo: third chain-r7"
    assert sent(fake_openai, "third chain-r7")["messages"] == [  # instructions are not carried over
        {"role": "user", "content": "first chain-r7"}, {"role": "assistant", "content": "echo: first chain-r7"},
        {"role": "user", "content": "second chain-r7"}, {"role": "assistant", "content": "echo: second chain-r7"},
        {"role": "user", "content": "third chain-r7"}]
    # an item_reference names an item of the chain
    again = client.responses.create(model="gpt-4o-mini", previous_response_id=three.id,
                                    input=[{"type": "item_reference", "id": one.output[0].id}])
    referenced = sent(fake_openai, "third chain-r7")["messages"][-1]
    assert referenced == {"role": "assistant", "content": "echo: first chain-r7"}
    assert client.responses.input_items.list(again.id).data[0].type == "message"
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="gpt-4o-mini", input=[{"type": "item_reference", "id": "msg_unknown"}])
    with client.responses.stream(model="gpt-4o-mini", previous_response_id=three.id, input="fourth chain-r7") as s:
        fourth = s.get_final_response()
    # a streamed turn is stored before its last event: chained at once
    client.responses.create(model="gpt-4o-mini", previous_response_id=fourth.id, input="fifth chain-r7")
    assert len(sent(fake_openai, "fifth chain-r7")["messages"]) == 9


def test_retrieve_input_items_and_delete(client: openai.OpenAI, gateway: RunningServer) -> None:
    made = client.responses.create(model="gpt-4o-mini", input=[
        {"role": "user", "content": "items-r8 one"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "items-r8 two"}]}])
    with gateway.http(gateway.admin_key) as http:
        got = http.get(f"/v1/responses/{made.id}")
        assert got.status_code == 200
        strict_response(got.json())
        listed = http.get(f"/v1/responses/{made.id}/input_items", params={"order": "asc"}).json()
    assert got.json() == made.model_dump(mode="json", exclude_unset=True)
    strict(TypeAdapter(ResponseItemList), listed)
    assert [i["content"][0]["text"] for i in listed["data"]] == ["items-r8 one", "items-r8 two"]
    assert listed["first_id"] == listed["data"][0]["id"] and listed["has_more"] is False
    page = client.responses.input_items.list(made.id, order="desc", limit=1)
    assert [i.content[0].text for i in page.data] == ["items-r8 two"] and page.has_more  # type: ignore[union-attr]
    rest = client.responses.input_items.list(made.id, order="desc", limit=1, after=page.data[0].id)
    assert [i.content[0].text for i in rest.data] == ["items-r8 one"] and not rest.has_more  # type: ignore[union-attr]
    assert [i.id for i in client.responses.input_items.list(made.id)] == [page.data[0].id, rest.data[0].id]
    client.responses.delete(made.id)
    with pytest.raises(openai.NotFoundError) as err:
        client.responses.retrieve(made.id)
    assert err.value.body == {"message": f"Response with id '{made.id}' not found.", "type": "invalid_request_error",
                              "param": None, "code": "not_found"}
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(made.id)


def test_another_key_sees_nothing(client: openai.OpenAI, other: openai.OpenAI) -> None:
    mine = client.responses.create(model="gpt-4o-mini", input="owned-r9")
    theirs = other.responses.create(model="gpt-4o-mini", input="theirs-r9")
    for call in (lambda: other.responses.retrieve(mine.id), lambda: other.responses.delete(mine.id),
                 lambda: other.responses.input_items.list(mine.id), lambda: other.responses.cancel(mine.id)):
        with pytest.raises(openai.NotFoundError) as err:
            call()
        assert err.value.body["message"] == f"Response with id '{mine.id}' not found."  # type: ignore[index]
    with pytest.raises(openai.NotFoundError) as chained:
        other.responses.create(model="gpt-4o-mini", previous_response_id=mine.id, input="steal-r9")
    assert chained.value.body["param"] == "previous_response_id"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError) as unknown:
        other.responses.create(model="gpt-4o-mini", previous_response_id="resp_nope", input="steal-r9")
    assert unknown.value.body["message"].replace("resp_nope", mine.id) == chained.value.body["message"]  # type: ignore[index]
    assert client.responses.retrieve(theirs.id).output_text == "echo: theirs-r9"  # admin keys see all
    assert other.responses.retrieve(theirs.id).id == theirs.id
    assert client.responses.retrieve(mine.id).id == mine.id  # still there


def test_store_false_is_not_kept(client: openai.OpenAI) -> None:
    made = client.responses.create(model="gpt-4o-mini", input="unstored-r10", store=False)
    assert made.output_text == "echo: unstored-r10"
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(made.id)
    with client.responses.stream(model="gpt-4o-mini", input="unstored-r10 stream", store=False) as s:
        streamed = s.get_final_response()
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(streamed.id)


def test_cancel_and_input_tokens(client: openai.OpenAI) -> None:
    made = client.responses.create(model="gpt-4o-mini", input="cancel-r11")
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.cancel(made.id)
    assert err.value.body["message"] == "Only responses created with background=true can be cancelled"  # type: ignore[index]
    counted = client.responses.input_tokens.count(model="gpt-4o-mini", input="x" * 400, tools=[WEATHER])  # type: ignore[list-item]
    assert counted.object == "response.input_tokens" and counted.input_tokens > 100
    chained = client.responses.input_tokens.count(model="gpt-4o-mini", previous_response_id=made.id, input="more")
    assert chained.input_tokens >= 3


# ---------------------------------------------------------------------- errors
def test_errors_before_and_after_the_first_byte(client: openai.OpenAI, gateway: RunningServer) -> None:
    with pytest.raises(openai.RateLimitError):
        client.responses.create(model="error-429", input="limited-r12")
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="no-such-model", input="missing-r12")
    image = {"type": "message", "role": "user", "content": [{"type": "input_image", "file_id": "f"}]}
    bad = raw_create(gateway, {"model": "gpt-4o-mini", "input": [image]})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "input[0].content[0].file_id"
    assert raw_create(gateway, {"model": "gpt-4o-mini"}).json()["error"]["param"] == "input"
    with gateway.http(gateway.admin_key) as http:
        assert http.post("/v1/responses", content=b"{nope").status_code == 400
        assert http.get("/v1/responses/resp_x/input_items", params={"limit": "0"}).status_code == 404
    events = raw_events(gateway, {"model": "fail-mid-stream", "input": "cut-r12"})
    assert events[0]["type"] == "response.created" and events[-1]["type"] == "response.failed"
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and failed["error"]["code"] == "server_error"
    assert client.responses.retrieve(failed["id"]).status == "failed"



def test_client_disconnect_cancels_the_upstream(gateway: RunningServer, fake_openai: FakeOpenAI) -> None:
    before = fake_openai.disconnects
    with gateway.http(gateway.admin_key) as http, http.stream(
        "POST", "/v1/responses", json={"model": "slow-stream", "input": "leave-r14", "stream": True},
        headers={"x-request-id": "responses-disconnect-1"},
    ) as resp:
        for line in resp.iter_lines():  # leave at the first text delta
            if line == "event: response.output_text.delta":
                break
    assert fake_openai.wait_for_disconnects(before + 1, timeout=3.0)  # long before its 50 chunks would end
    row = gateway.usage_row("responses-disconnect-1")
    assert row["status"] == 499 and row["streamed"]


# ---------------------------------------------------------------------- budgets
def test_a_budget_reserves_from_max_output_tokens(tmp_path_factory: pytest.TempPathFactory) -> None:
    priced = {"input_cost_per_1m": 10_000.0, "output_cost_per_1m": 10_000.0}  # a cent a token
    with FakeOpenAI() as up, run_server(
        tmp_path_factory.mktemp("responses-budget"),
        providers={"up": {"type": "openai", "base_url": up.base_url, "cooldown_failures": 0}},
        models=[{"alias": "m", "provider": "up", "model": "gpt-4o-mini", **priced}],
    ) as server:
        with server.http(server.admin_key) as http:
            made = http.post("/admin/keys", json={"name": "thrifty", "budget": {"amount_usd": 0.5, "period": "daily"}})
        key = made.json()["key"]
        with openai.OpenAI(base_url=server.v1, api_key=key, max_retries=0, timeout=30) as oai:
            oai.responses.create(model="m", input="within budget", max_output_tokens=5)
            assert up.last_request.body["max_tokens"] == 5
            oai.responses.create(model="m", input="beyond budget", max_output_tokens=1000)
            assert 1 <= up.last_request.body["max_tokens"] < 50  # lowered to what $0.50 pays for
            with server.http(server.admin_key) as http:
                spent = {"budget": {"amount_usd": 0.0001, "period": "total"}}
                assert http.patch(f"/admin/keys/{made.json()['id']}", json=spent).status_code == 200
            with pytest.raises(openai.RateLimitError) as err:
                oai.responses.create(model="m", input="no budget left", max_output_tokens=5)
            assert err.value.code == "insufficient_quota"

# ------------------------------------------------------------ a non-OpenAI provider
@pytest.fixture(scope="module")
def claude_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, FakeAnthropic]]:
    with FakeAnthropic(api_key="sk-ant-upstream-0123456789") as fake, run_server(
        tmp_path_factory.mktemp("responses-anthropic"),
        providers={"claude": {"type": "anthropic", "base_url": fake.base_url, "api_key": "sk-ant-upstream-0123456789",
                              "cooldown_failures": 0}},
        models=[{"alias": "claude", "provider": "claude", "model": "claude-sonnet-4-5"},
                {"alias": "claude-strict", "provider": "claude", "model": "claude-sonnet-4-5",
                 "hosted_tools": "reject"}],
    ) as server:
        yield server, fake


def test_anthropic_upstream(claude_server: tuple[RunningServer, FakeAnthropic]) -> None:
    server, fake = claude_server
    with openai.OpenAI(base_url=server.v1, api_key=server.admin_key, max_retries=0, timeout=30) as oai:
        raw = oai.responses.with_raw_response.create(model="claude", instructions="be brief", input="hello claude-r13")
        strict_response(raw.http_response.json())
        first = raw.parse()
        assert first.output_text == "echo: hello claude-r13" and first.usage is not None
        upstream = fake.messages_requests()[-1]
        assert upstream["system"] in ("be brief", [{"type": "text", "text": "be brief"}])
        events = raw_events(server, {"model": "claude", "input": "streamed claude-r13",
                                     "previous_response_id": first.id})
        assert events[-1]["type"] == "response.completed"
        assert events[-1]["response"]["output"][0]["content"][0]["text"] == "echo: streamed claude-r13"
        assert [m["role"] for m in fake.messages_requests()[-1]["messages"]] == ["user", "assistant", "user"]
        call = oai.responses.create(model="claude", input="weather claude-r13", tools=[WEATHER])  # type: ignore[list-item]
        assert call.output[-1].type == "function_call" and call.output[-1].name == "get_weather"
        answer = oai.responses.create(model="claude", previous_response_id=call.id, tools=[WEATHER],  # type: ignore[list-item]
                                      input=[{"type": "function_call_output", "call_id": call.output[-1].call_id,
                                              "output": "sunny"}])
        assert answer.output_text == "tool said: sunny"



def test_a_model_can_refuse_hosted_tools(claude_server: tuple[RunningServer, FakeAnthropic]) -> None:
    server, _ = claude_server
    body = {"input": "search claude-r15", "tools": [WEATHER, {"type": "web_search"}]}
    refused = raw_create(server, {**body, "model": "claude-strict"})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "tools[1].type", refused.text
    removed = raw_create(server, {**body, "model": "claude"})
    assert removed.status_code == 200 and removed.headers["x-switchyard-removed-tools"] == "web_search"


# ------------------------------------------------------------ two replicas, one PostgreSQL
def test_two_replicas_on_postgresql_chain_at_once(tmp_path_factory: pytest.TempPathFactory, fake_openai: FakeOpenAI,
                                                  pg_url: str) -> None:
    asyncio.run(reset_pg_schema(pg_url))
    shared = {"database_url": pg_url, "secret_key": "replicas-share-this-secret-0123456789",
              "providers": {"fake": {"type": "openai", "base_url": fake_openai.base_url, "api_key": UPSTREAM_KEY}},
              "models": [{"alias": "gpt-4o-mini", "provider": "fake"}]}
    with run_server(tmp_path_factory.mktemp("replica-a"), **shared) as a, \
            run_server(tmp_path_factory.mktemp("replica-b"), **shared) as b:
        user = make_key(a.settings, "replica-user")
        with openai.OpenAI(base_url=a.v1, api_key=user, max_retries=0, timeout=30) as on_a, \
                openai.OpenAI(base_url=b.v1, api_key=user, max_retries=0, timeout=30) as on_b, \
                openai.OpenAI(base_url=b.v1, api_key=make_key(b.settings, "replica-other"), max_retries=0,
                              timeout=30) as stranger:
            first = on_a.responses.create(model="gpt-4o-mini", input="made on replica-a")
            second = on_b.responses.create(model="gpt-4o-mini", previous_response_id=first.id,
                                           input="chained on replica-b")  # the very next request
            assert [m["content"] for m in sent(fake_openai, "chained on replica-b")["messages"]] == [
                "made on replica-a", "echo: made on replica-a", "chained on replica-b"]
            assert on_a.responses.retrieve(second.id).output_text == "echo: chained on replica-b"
            with pytest.raises(openai.NotFoundError):
                stranger.responses.retrieve(first.id)
            with pytest.raises(openai.NotFoundError):
                stranger.responses.create(model="gpt-4o-mini", previous_response_id=first.id, input="steal")
