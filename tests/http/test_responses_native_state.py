"""Responses held by an upstream that speaks the Responses API (native pass-through): the gateway
records who made each one, so it is visible to that key (and admin keys) only, as a response the
gateway stores is; ``GET``/``DELETE``/``input_items``/``cancel`` are relayed to the upstream
holding it. On SQLite and on PostgreSQL, with the openai SDK through the real server.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.conftest import reset_pg_schema
from tests.contract.openapi import validate
from tests.fakes import FakeOpenAI
from tests.harness import RunningServer, make_key, run_server

Stack = tuple[RunningServer, FakeOpenAI, str, str]  # server, upstream, key A, key B


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data: Path = tmp_path_factory.mktemp(f"native-state-{request.param}")
    store: dict[str, Any] = {}
    if request.param == "postgresql":
        url = request.getfixturevalue("pg_url")
        asyncio.run(reset_pg_schema(url))
        store = {"database_url": url}
    with FakeOpenAI(models=["gpt-up"]) as upstream, run_server(
        data, **store,
        providers={"oai": {"type": "openai", "base_url": upstream.base_url}},
        models=[{"alias": "native", "provider": "oai", "model": "gpt-up", "capabilities": {"responses": "native"}},
                {"alias": "translated", "provider": "oai", "model": "gpt-up"}],
    ) as server:
        yield server, upstream, make_key(server.settings, "native-a"), make_key(server.settings, "native-b")


def _client(server: RunningServer, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.v1, api_key=key, max_retries=0, timeout=30)


def _responses_calls(upstream: FakeOpenAI, marker: str) -> list[dict[str, Any]]:
    return [dict(r.body) for r in upstream.requests if r.path == "/v1/responses" and marker in json.dumps(r.body)]


def test_only_the_key_that_made_it_chains_from_it(stack: Stack) -> None:
    server, upstream, key_a, key_b = stack
    with _client(server, key_a) as a, _client(server, key_b) as b, _client(server, server.admin_key) as admin:
        first = a.responses.create(model="native", input="remember st-1")
        second = a.responses.create(model="native", input="and st-2", previous_response_id=first.id)
        assert _responses_calls(upstream, "st-2")[0]["previous_response_id"] == first.id
        assert second.usage is not None and first.usage is not None
        assert second.usage.input_tokens > first.usage.input_tokens  # the upstream chained them
        with pytest.raises(openai.NotFoundError) as err:
            b.responses.create(model="native", input="steal st-3", previous_response_id=first.id)
        assert err.value.body == {"message": f"Previous response with id '{first.id}' not found.",
                                  "type": "invalid_request_error", "param": "previous_response_id",
                                  "code": "previous_response_not_found"}
        assert _responses_calls(upstream, "st-3") == []  # refused before any upstream call
        with pytest.raises(openai.NotFoundError) as unknown:  # the same answer as an id nobody made
            b.responses.create(model="native", input="guess st-4", previous_response_id="resp_" + "0" * 48)
        assert unknown.value.body["code"] == err.value.body["code"]  # type: ignore[index]
        assert _responses_calls(upstream, "st-4") == []
        third = admin.responses.create(model="native", input="admin st-5", previous_response_id=second.id)
        assert _responses_calls(upstream, "st-5")[0]["previous_response_id"] == second.id
        assert third.output_text == "echo: admin st-5"


def test_get_input_items_cancel_and_delete_are_relayed_for_their_key(stack: Stack) -> None:
    server, upstream, key_a, key_b = stack
    with _client(server, key_a) as a, _client(server, key_b) as b, _client(server, server.admin_key) as admin:
        made = a.responses.create(model="native", input="keep st-6")
        got = a.responses.with_raw_response.retrieve(made.id).http_response.json()
        validate(got, "Response")
        assert got["id"] == made.id and got["model"] == "native"  # the alias, not the upstream's name
        assert got["output"][0]["content"][0]["text"] == "echo: keep st-6"
        assert admin.responses.retrieve(made.id).output_text == "echo: keep st-6"
        items = a.responses.input_items.list(made.id)
        assert [(i.type, i.content[0].text) for i in items.data] == [("message", "keep st-6")]  # type: ignore[union-attr]
        for refused in (lambda: b.responses.retrieve(made.id), lambda: b.responses.input_items.list(made.id),
                        lambda: b.responses.cancel(made.id), lambda: b.responses.delete(made.id)):
            before = len(upstream.requests)
            with pytest.raises(openai.NotFoundError) as err:
                refused()
            assert err.value.body["message"] == f"Response with id '{made.id}' not found."  # type: ignore[index]
            assert len(upstream.requests) == before  # nothing reached the upstream
        with pytest.raises(openai.BadRequestError) as cancel:  # the upstream's own answer
            a.responses.cancel(made.id)
        assert "background=true" in cancel.value.message
        seen = [(r.method, r.path) for r in upstream.requests if made.id in r.path]
        assert ("GET", f"/v1/responses/{made.id}") in seen and ("POST", f"/v1/responses/{made.id}/cancel") in seen
        a.responses.delete(made.id)
        assert made.id not in upstream.responses_api.stored  # deleted at the upstream
        with pytest.raises(openai.NotFoundError):  # and forgotten here: no upstream call
            a.responses.retrieve(made.id)
        with pytest.raises(openai.NotFoundError):
            a.responses.create(model="native", input="after st-7", previous_response_id=made.id)
        assert _responses_calls(upstream, "st-7") == []


def test_a_stream_records_its_owner(stack: Stack) -> None:
    server, upstream, key_a, key_b = stack
    with _client(server, key_a) as a, _client(server, key_b) as b:
        with a.responses.stream(model="native", input="streamed st-8") as s:
            final = s.get_final_response()
        follow = a.responses.create(model="native", input="next st-9", previous_response_id=final.id, stream=True)
        events = list(follow)
        assert events[-1].type == "response.completed"
        assert _responses_calls(upstream, "st-9")[0]["previous_response_id"] == final.id
        assert a.responses.retrieve(final.id).output_text == "echo: streamed st-8"
        with pytest.raises(openai.NotFoundError):
            b.responses.retrieve(final.id)
        with pytest.raises(openai.NotFoundError):
            b.responses.create(model="native", input="steal st-10", previous_response_id=final.id, stream=True)
        assert _responses_calls(upstream, "st-10") == []


def test_store_false_records_nothing(stack: Stack) -> None:
    server, upstream, key_a, _ = stack
    with _client(server, key_a) as a:
        made = a.responses.create(model="native", input="forget st-11", store=False)
        with pytest.raises(openai.NotFoundError):
            a.responses.retrieve(made.id)
        assert not [r for r in upstream.requests if made.id in r.path]


def test_a_translated_model_cannot_continue_an_upstream_held_response(stack: Stack) -> None:
    server, upstream, key_a, _ = stack
    with _client(server, key_a) as a:
        made = a.responses.create(model="native", input="held st-12")
        before = len(upstream.requests)
        with pytest.raises(openai.NotFoundError) as err:  # its history is at the upstream, not here
            a.responses.create(model="translated", input="go on st-13", previous_response_id=made.id)
        assert err.value.body["param"] == "previous_response_id"  # type: ignore[index]
        assert len(upstream.requests) == before



def test_a_chain_stays_on_the_deployment_that_holds_it(tmp_path: Path) -> None:
    """An alias spread over two upstreams (weighted at random): each turn of a chain goes to the
    upstream holding its previous response, the only one that knows the id; an alias with no
    deployment there cannot continue it."""
    with FakeOpenAI(models=["gpt-up"]) as up_a, FakeOpenAI(models=["gpt-up"]) as up_b, run_server(
        tmp_path,
        providers={"a": {"type": "openai", "base_url": up_a.base_url},
                   "b": {"type": "openai", "base_url": up_b.base_url}},
        models=[{"alias": "spread", "capabilities": {"responses": "native"},
                 "deployments": [{"provider": "a", "model": "gpt-up"}, {"provider": "b", "model": "gpt-up"}]},
                {"alias": "only-b", "provider": "b", "model": "gpt-up", "capabilities": {"responses": "native"}}],
    ) as server, _client(server, server.admin_key) as client:
        last: dict[str, str] = {}  # a response id held by each upstream
        for chain in range(6):  # 12 follow-ups: unpinned, each would go to the wrong upstream half the time
            made = client.responses.create(model="spread", input=f"pin {chain}-0")
            holder, other = (up_a, up_b) if _responses_calls(up_a, f"pin {chain}-0") else (up_b, up_a)
            for turn in (1, 2):
                if turn == 1:
                    made = client.responses.create(model="spread", input=f"pin {chain}-1",
                                                   previous_response_id=made.id)
                else:  # a stream: its last event carries the response
                    events = list(client.responses.create(model="spread", input=f"pin {chain}-2",
                                                          previous_response_id=made.id, stream=True))
                    assert events[-1].type == "response.completed"
                    made = events[-1].response
                calls = _responses_calls(holder, f"pin {chain}-{turn}")
                assert len(calls) == 1 and calls[0]["previous_response_id"]
            assert made.output_text == f"echo: pin {chain}-2"
            assert _responses_calls(other, f"pin {chain}-") == []
            last["a" if holder is up_a else "b"] = made.id
        if "a" in last:  # "only-b" has no deployment on the upstream holding it: refused before any call
            with pytest.raises(openai.NotFoundError) as err:
                client.responses.create(model="only-b", input="elsewhere pin-x", previous_response_id=last["a"])
            assert err.value.body["param"] == "previous_response_id"  # type: ignore[index]
            assert _responses_calls(up_b, "pin-x") == []
