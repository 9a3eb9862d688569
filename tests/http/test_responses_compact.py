"""``POST /v1/responses/compact`` and ``namespace`` tools, through the real server with the openai SDK.

The fake upstream is scripted: asked for a summary (the compaction prompt), it answers with one;
offered the ``crm`` namespace, it calls its ``lookup`` member.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types.responses import ResponseCompactionItem, ResponseInputMessageItem, ResponseUsage
from pydantic import TypeAdapter

from tests.fakes import FakeOpenAI
from tests.harness import RunningServer, make_key, run_server
from tests.protocol.responses_schema import strict, strict_response

SUMMARY = "The user is writing a haiku about rivers; two drafts so far."
CRM = {"type": "namespace", "name": "crm", "description": "Customer records.",
       "tools": [{"type": "function", "name": "lookup", "description": "Find a customer.",
                  "parameters": {"type": "object", "properties": {"who": {"type": "string"}}, "required": ["who"]}}]}


def _plan(body: dict[str, Any]) -> tuple[str, Any] | None:
    last = body["messages"][-1]
    if last.get("role") == "user" and "Summarize the conversation so far" in str(last.get("content")):
        return "text", SUMMARY
    names = [t["function"]["name"] for t in body.get("tools") or []]
    if "crm__lookup" in names and last.get("role") != "tool":
        return "tool", ("crm__lookup", json.dumps({"who": "Ada"}))
    return None


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, FakeOpenAI]]:
    data: Path = tmp_path_factory.mktemp("compact")
    with FakeOpenAI(models=["up"], planner=_plan) as upstream, run_server(
        data, providers={"up": {"type": "openai", "base_url": upstream.base_url}},
        models=[{"alias": "m", "provider": "up", "model": "up"}],
    ) as server:
        yield server, upstream


@pytest.fixture
def sdk(stack: tuple[RunningServer, FakeOpenAI]) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=stack[0].v1, api_key=stack[0].admin_key, max_retries=0, timeout=30) as c:
        yield c


def _chats(upstream: FakeOpenAI) -> list[dict[str, Any]]:
    return [dict(r.body) for r in upstream.requests if r.path == "/v1/chat/completions"]


def test_compact_summarizes_and_the_compaction_carries_the_summary_forward(
        stack: tuple[RunningServer, FakeOpenAI], sdk: openai.OpenAI) -> None:
    server, upstream = stack
    first = sdk.responses.create(model="m", input="write a haiku about rivers", instructions="Be a poet.")
    # the SDK types every "message" in a compaction's output as an assistant message; the wire is read
    raw = sdk.responses.with_raw_response.compact(
        model="m", previous_response_id=first.id, input=[{"role": "user", "content": "another draft please"}],
        instructions="Be a poet.",
    ).http_response.json()
    assert raw["object"] == "response.compaction" and raw["id"].startswith("resp_")
    *users, compaction = raw["output"]
    for item in users:
        strict(TypeAdapter(ResponseInputMessageItem), item)
    assert [u["content"][0]["text"] for u in users] == ["write a haiku about rivers", "another draft please"]
    strict(TypeAdapter(ResponseCompactionItem), compaction)
    strict(TypeAdapter(ResponseUsage), raw["usage"])
    assert raw["usage"]["output_tokens"] > 0
    assert SUMMARY not in json.dumps(raw) and "haiku" not in compaction["encrypted_content"]

    asked = _chats(upstream)[-1]  # the summary call: the whole conversation, then the compaction prompt
    assert asked["messages"][0] == {"role": "system", "content": "Be a poet."}
    assert "tools" not in asked and asked["messages"][-1]["role"] == "user"
    assert [m["content"] for m in asked["messages"][1:-1]] == [
        "write a haiku about rivers", "echo: write a haiku about rivers", "another draft please"]

    # the compacted window goes back as input: the summary reaches the model as a user message
    after = sdk.responses.create(model="m", input=[*raw["output"], {"role": "user", "content": "go on"}])
    strict_response(after.model_dump(mode="json", exclude_unset=True))
    sent = _chats(upstream)[-1]["messages"]
    assert [m["content"] for m in sent] == [
        "write a haiku about rivers", "another draft please",
        f"Summary of the conversation so far:\n{SUMMARY}", "go on"]
    rows = server.usage_rows(wait_for=3)
    assert sum(1 for r in rows if r["model"] == "m" and r["status"] == 200 and r["endpoint"] == "responses") >= 3


def test_a_compaction_opens_only_for_the_key_it_was_given_to(
        stack: tuple[RunningServer, FakeOpenAI], sdk: openai.OpenAI) -> None:
    server, _ = stack
    compacted = sdk.responses.compact(model="m", input="remember the number 7")
    item = compacted.output[-1].model_dump(mode="json", exclude_unset=True)
    assert item["type"] == "compaction"
    other = make_key(server.settings, "compact-other")
    with openai.OpenAI(base_url=server.v1, api_key=other, max_retries=0, timeout=30) as stranger:
        with pytest.raises(openai.BadRequestError) as err:
            stranger.responses.create(model="m", input=[item, {"role": "user", "content": "and?"}])
    assert err.value.body["param"] == "input[0].encrypted_content"  # type: ignore[index]
    tampered = {**item, "encrypted_content": item["encrypted_content"][:-4] + "AAAA"}
    with pytest.raises(openai.BadRequestError):
        sdk.responses.create(model="m", input=[tampered])


def test_compact_refuses_bad_input(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        sdk.responses.compact(model="m", input=42)  # type: ignore[arg-type]
    assert err.value.body["param"] == "input"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        sdk.responses.compact(model="m", previous_response_id="resp_nope", input="x")


def test_a_namespace_tool_is_called_and_answered(stack: tuple[RunningServer, FakeOpenAI],
                                                  sdk: openai.OpenAI) -> None:
    _, upstream = stack
    first = sdk.responses.create(model="m", input="find Ada", tools=[CRM])  # type: ignore[list-item]
    raw = first.model_dump(mode="json", exclude_unset=True)
    strict_response(raw)  # the namespace tool echoed, and the call's namespace, are OpenAI's shapes
    call = raw["output"][0]
    assert call["type"] == "function_call" and call["name"] == "lookup" and call["namespace"] == "crm"
    offered = _chats(upstream)[-1]["tools"]
    assert [t["function"]["name"] for t in offered] == ["crm__lookup"]
    second = sdk.responses.create(model="m", previous_response_id=first.id, tools=[CRM],  # type: ignore[list-item]
                                  input=[{"type": "function_call_output", "call_id": call["call_id"],
                                          "output": "Ada Lovelace, London"}])
    assert second.output_text == "tool said: Ada Lovelace, London"
    sent = _chats(upstream)[-1]["messages"]
    assert sent[-2]["tool_calls"][0]["function"]["name"] == "crm__lookup"
    assert raw["tools"][0]["name"] == "crm" and raw["tools"][0]["tools"][0]["name"] == "lookup"
