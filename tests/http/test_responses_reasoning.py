"""Stateless reasoning: ``store: false`` with ``include: ["reasoning.encrypted_content"]``.

Reasoning items come back with their text sealed for the key that asked; sent back in ``input``,
they are opened and the reasoning goes to the upstream again (``reasoning_content`` on the
assistant message), while the gateway keeps nothing. Through the real server with the openai SDK,
against a scripted upstream that reasons as vLLM and DeepSeek do.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from tests.fakes.scripted_openai import ScriptedOpenAI, Turn
from tests.harness import RunningServer, make_key, run_server
from tests.protocol.responses_schema import strict_event, strict_response

THOUGHT = "The user greets me; a short friendly answer fits."
INCLUDE: list[Any] = ["reasoning.encrypted_content"]


def _script(body: dict[str, Any]) -> Turn:
    return Turn(reasoning=THOUGHT, text=f"answer {len(body['messages'])}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, ScriptedOpenAI]]:
    data: Path = tmp_path_factory.mktemp("reasoning")
    with ScriptedOpenAI(_script, models=["up"]) as upstream, run_server(
        data, providers={"up": {"type": "openai", "base_url": upstream.base_url}},
        models=[{"alias": "m", "provider": "up", "model": "up"}],
    ) as server:
        yield server, upstream


@pytest.fixture
def sdk(stack: tuple[RunningServer, ScriptedOpenAI]) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=stack[0].v1, api_key=stack[0].admin_key, max_retries=0, timeout=30) as c:
        yield c


def _stored_rows(server: RunningServer) -> int:
    async def count() -> int:
        engine = create_async_engine(server.settings.resolved_database_url)
        try:
            async with engine.connect() as conn:
                return int((await conn.execute(sa.text("SELECT count(*) FROM responses"))).scalar_one())
        finally:
            await engine.dispose()

    return asyncio.run(count())


def _last_chat(upstream: ScriptedOpenAI) -> dict[str, Any]:
    return dict([r for r in upstream.requests if r.path == "/v1/chat/completions"][-1].body)


def _reasoning_item(output: list[dict[str, Any]]) -> dict[str, Any]:
    found = [item for item in output if item["type"] == "reasoning"]
    assert len(found) == 1, output
    return found[0]


def test_sealed_reasoning_round_trips_and_nothing_is_stored(
        stack: tuple[RunningServer, ScriptedOpenAI], sdk: openai.OpenAI) -> None:
    server, upstream = stack
    before = _stored_rows(server)
    first = sdk.responses.with_raw_response.create(
        model="m", input="hello there", store=False, include=INCLUDE).http_response.json()
    strict_response(first)
    item = _reasoning_item(first["output"])
    sealed = item["encrypted_content"]
    assert isinstance(sealed, str) and THOUGHT not in sealed
    assert THOUGHT not in base64.urlsafe_b64decode(sealed).decode(errors="replace")
    assert item["content"] == [{"type": "reasoning_text", "text": THOUGHT}]  # readable to the client, as asked

    # turn 2, stateless: the client sends the whole output back, with a new message
    second = sdk.responses.with_raw_response.create(
        model="m", store=False, include=INCLUDE,
        input=[{"role": "user", "content": "hello there"}, *first["output"], {"role": "user", "content": "and again"}],
    ).http_response.json()
    strict_response(second)
    assert _reasoning_item(second["output"])["encrypted_content"]
    messages = _last_chat(upstream)["messages"]
    assistant = [m for m in messages if m["role"] == "assistant"]
    assert assistant == [{"role": "assistant", "content": "answer 1", "reasoning_content": THOUGHT}]
    assert messages[-1] == {"role": "user", "content": "and again"}
    assert _stored_rows(server) == before  # the gateway kept nothing
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(first["id"])


def test_without_include_nothing_is_sealed_or_restored(
        stack: tuple[RunningServer, ScriptedOpenAI], sdk: openai.OpenAI) -> None:
    """Without ``include``, no sealed content; reasoning the client sends back plain is not restored."""
    _, upstream = stack
    first = sdk.responses.with_raw_response.create(model="m", input="hi", store=False).http_response.json()
    item = _reasoning_item(first["output"])
    assert "encrypted_content" not in item
    sdk.responses.create(model="m", store=False, input=[*first["output"], {"role": "user", "content": "more"}])
    assistant = [m for m in _last_chat(upstream)["messages"] if m["role"] == "assistant"]
    assert assistant and all("reasoning_content" not in m for m in assistant)


def test_a_stream_seals_the_reasoning_item(stack: tuple[RunningServer, ScriptedOpenAI],
                                           sdk: openai.OpenAI) -> None:
    server, upstream = stack
    with server.http(server.admin_key) as http, http.stream(
            "POST", "/v1/responses",
            json={"model": "m", "input": "stream it", "store": False, "include": INCLUDE, "stream": True}) as resp:
        assert resp.status_code == 200
        raw = resp.read().decode()
    events = [json.loads(frame.split("\ndata: ", 1)[1]) for frame in raw.split("\n\n") if frame.strip()]
    for event in events:
        strict_event(event)
    done = [e["item"] for e in events if e["type"] == "response.output_item.done" and e["item"]["type"] == "reasoning"]
    assert len(done) == 1 and isinstance(done[0]["encrypted_content"], str)
    completed = events[-1]
    assert completed["type"] == "response.completed"
    assert _reasoning_item(completed["response"]["output"])["encrypted_content"] == done[0]["encrypted_content"]
    sdk.responses.create(model="m", store=False, include=INCLUDE,
                         input=[{"type": "reasoning", "id": done[0]["id"], "summary": [],
                                 "encrypted_content": done[0]["encrypted_content"]},
                                {"role": "assistant", "content": "streamed answer"},
                                {"role": "user", "content": "next"}])
    assistant = [m for m in _last_chat(upstream)["messages"] if m["role"] == "assistant"]
    assert assistant == [{"role": "assistant", "content": "streamed answer", "reasoning_content": THOUGHT}]


def _tampered(token: str) -> str:
    raw = bytearray(base64.urlsafe_b64decode(token))
    raw[-1] ^= 1
    return base64.urlsafe_b64encode(bytes(raw)).decode()


def test_a_tampered_or_another_keys_item_is_a_400(stack: tuple[RunningServer, ScriptedOpenAI],
                                                  sdk: openai.OpenAI) -> None:
    server, upstream = stack
    first = sdk.responses.with_raw_response.create(
        model="m", input="secret plans", store=False, include=INCLUDE).http_response.json()
    item = _reasoning_item(first["output"])
    calls = len(upstream.requests)
    for token in (_tampered(item["encrypted_content"]), "not base64 at all!", ""):
        with pytest.raises(openai.BadRequestError) as err:
            sdk.responses.create(model="m", store=False,
                                 input=[{"role": "user", "content": "x"}, {**item, "encrypted_content": token}])
        assert err.value.status_code == 400
        body: Any = err.value.body
        assert body["type"] == "invalid_request_error" and body["param"] == "input[1].encrypted_content"
        assert body["code"] == "invalid_encrypted_content"
    other_key = make_key(server.settings, "reasoning-other")
    with openai.OpenAI(base_url=server.v1, api_key=other_key, max_retries=0, timeout=30) as other, \
            pytest.raises(openai.BadRequestError) as err:
        other.responses.create(model="m", store=False, input=[item, {"role": "user", "content": "mine now?"}])
    assert err.value.body["param"] == "input[0].encrypted_content"  # type: ignore[index]
    assert THOUGHT not in json.dumps(err.value.body)
    assert len(upstream.requests) == calls  # refused before any upstream call
