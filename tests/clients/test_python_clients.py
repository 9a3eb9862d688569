"""openai-agents and langchain-openai, with their Responses models, through Switchyard.

Each client is pointed at the real server (a real key) in front of a fake upstream of each kind
Switchyard translates to: OpenAI-compatible chat, Anthropic Messages and Gemini. What the upstream
receives (read back from its own wire format), what the client gets back, and the usage rows
(endpoint ``responses``) are all checked.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from agents import (
    Agent,
    ItemHelpers,
    Runner,
    function_tool,
    set_default_openai_api,
    set_default_openai_client,
    set_tracing_disabled,
)
from langchain_openai import ChatOpenAI
from openai import AsyncOpenAI

from tests.fakes import FakeOpenAI
from tests.fakes._server import FakeServer
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.gemini_upstream import FakeGemini
from tests.harness import RunningServer, run_server

ALIAS = "agent-model"
KINDS = ["openai", "anthropic", "gemini"]


def _plan(body: dict[str, Any]) -> tuple[str, Any] | None:
    """The OpenAI fake's script: call ``lookup_code`` when offered (once), else answer in text."""
    messages = body["messages"]
    tools = [t["function"]["name"] for t in body.get("tools") or []]
    if "lookup_code" in tools and messages[-1].get("role") != "tool":
        return "tool", ("lookup_code", json.dumps({"city": "Oslo"}))
    if messages[-1].get("role") == "tool":
        return "text", f"The code is {messages[-1]['content']}."
    return "text", "hello from the fake upstream"


@dataclass
class Sent:
    """One upstream request, read back from its provider's wire format."""

    system: str
    last_user: str
    tools: list[str]
    tool_result: str | None  # the output of a tool call, when the last turn carries one
    stream: bool


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return " ".join(b.get("text", "") for b in content or [] if isinstance(b, dict))


def _openai_sent(fake: FakeServer) -> list[Sent]:
    out = []
    for r in fake.requests:
        if r.path != "/v1/chat/completions":
            continue
        msgs = r.body["messages"]
        user = [m for m in msgs if m["role"] == "user"]
        out.append(Sent(
            system=" ".join(_text(m["content"]) for m in msgs if m["role"] in ("system", "developer")),
            last_user=_text(user[-1]["content"]) if user else "",
            tools=[t["function"]["name"] for t in r.body.get("tools") or []],
            tool_result=_text(msgs[-1]["content"]) if msgs[-1]["role"] == "tool" else None,
            stream=bool(r.body.get("stream"))))
    return out


def _anthropic_sent(fake: FakeServer) -> list[Sent]:
    out = []
    for r in fake.requests:
        if r.path != "/v1/messages" or r.method != "POST":
            continue
        msgs = r.body["messages"]
        last = msgs[-1]["content"]
        blocks = [{"type": "text", "text": last}] if isinstance(last, str) else last
        results = [b for b in blocks if b["type"] == "tool_result"]
        users = [_text([b for b in ([{"type": "text", "text": m["content"]}] if isinstance(m["content"], str)
                                     else m["content"]) if b["type"] == "text"])
                 for m in msgs if m["role"] == "user"]
        out.append(Sent(
            system=_text(r.body.get("system")),
            last_user=next((u for u in reversed(users) if u), ""),
            tools=[t["name"] for t in r.body.get("tools") or []],
            tool_result=_text(results[0].get("content")) if results else None,
            stream=bool(r.body.get("stream"))))
    return out


def _gemini_sent(fake: FakeServer) -> list[Sent]:
    out = []
    for r in fake.requests:
        if r.method != "POST" or not r.path.endswith(("generateContent", "GenerateContent")):
            continue
        contents = r.body["contents"]
        answers = [p["functionResponse"] for p in contents[-1]["parts"] if "functionResponse" in p]
        users = [_text(c["parts"]) for c in contents if c.get("role", "user") == "user"]
        out.append(Sent(
            system=_text((r.body.get("systemInstruction") or {}).get("parts")),
            last_user=next((u for u in reversed(users) if u.strip()), ""),
            tools=[d["name"] for t in r.body.get("tools") or [] for d in t.get("functionDeclarations") or []],
            tool_result=str(answers[0]["response"].get("output", answers[0]["response"])) if answers else None,
            stream=":streamGenerateContent" in r.path))
    return out


@dataclass
class Stack:
    kind: str
    server: RunningServer
    upstream: FakeServer
    answer: Callable[[str], str]  # the upstream's text answer to a prompt
    tool_answer: str  # its answer once lookup_code returned OSLO-4711
    read: Callable[[FakeServer], list[Sent]]

    def sent(self) -> list[Sent]:
        return self.read(self.upstream)

    def usage_since(self, before: int, count: int) -> list[dict[str, Any]]:
        rows = self.server.usage_rows(wait_for=before + count)[before:]
        assert len(rows) == count, rows
        return rows


def _fake(kind: str) -> tuple[FakeServer, dict[str, Any], str]:
    if kind == "openai":
        return FakeOpenAI(models=["up-model"], planner=_plan), {"type": "openai"}, "up-model"
    if kind == "anthropic":
        key = "sk-ant-upstream-0123456789"
        return (FakeAnthropic(api_key=key, tool_arguments={"city": "Oslo"}),
                {"type": "anthropic", "api_key": key}, "claude-sonnet-4-5")
    key = "gemini-upstream-key"
    return FakeGemini(api_key=key, tool_arguments={"city": "Oslo"}), {"type": "gemini", "api_key": key}, \
        "gemini-2.5-flash"


@pytest.fixture(scope="module", params=KINDS)
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    kind: str = request.param
    fake, provider, model = _fake(kind)
    with fake, run_server(
        tmp_path_factory.mktemp(f"clients-{kind}"),
        providers={"up": {**provider, "base_url": fake.base_url}},
        models=[{"alias": ALIAS, "provider": "up", "model": model}],
    ) as server:
        if kind == "openai":
            yield Stack(kind, server, fake, lambda _: "hello from the fake upstream", "The code is OSLO-4711.",
                        _openai_sent)
        else:
            yield Stack(kind, server, fake, lambda prompt: f"echo: {prompt}", "tool said: OSLO-4711",
                        _anthropic_sent if kind == "anthropic" else _gemini_sent)


def _agents_client(server: RunningServer) -> AsyncOpenAI:
    client = AsyncOpenAI(base_url=server.v1, api_key=server.admin_key, max_retries=0, timeout=30)
    set_default_openai_client(client, use_for_tracing=False)
    set_default_openai_api("responses")
    set_tracing_disabled(True)
    return client


def _check_rows(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        assert (row["endpoint"], row["model"], row["status"]) == ("responses", ALIAS, 200), row
        assert row["prompt_tokens"] > 0 and row["completion_tokens"] > 0, row


def test_agents_runner_text(stack: Stack) -> None:
    before = len(stack.server.usage_rows(wait_for=0))
    sent_before = len(stack.sent())

    async def run() -> str:
        client = _agents_client(stack.server)
        agent = Agent(name="helper", instructions="Be brief.", model=ALIAS)
        result = await Runner.run(agent, "say hello")
        await client.close()
        return str(result.final_output)

    assert asyncio.run(run()) == stack.answer("say hello")
    [sent] = stack.sent()[sent_before:]
    assert "Be brief." in sent.system and sent.last_user == "say hello" and sent.tools == []
    _check_rows(stack.usage_since(before, 1))


def test_agents_runner_streamed(stack: Stack) -> None:
    before = len(stack.server.usage_rows(wait_for=0))
    sent_before = len(stack.sent())

    async def run() -> tuple[str, list[str], str, list[str]]:
        client = _agents_client(stack.server)
        agent = Agent(name="helper", instructions="Be brief.", model=ALIAS)
        streamed = Runner.run_streamed(agent, "say hello streamed")
        deltas: list[str] = []
        messages: list[str] = []
        types: list[str] = []
        async for event in streamed.stream_events():
            if event.type == "raw_response_event":
                types.append(event.data.type)
                if event.data.type == "response.output_text.delta":
                    deltas.append(event.data.delta)
            elif event.type == "run_item_stream_event" and event.item.type == "message_output_item":
                messages.append(ItemHelpers.text_message_output(event.item))
        await client.close()
        return "".join(deltas), messages, str(streamed.final_output), types

    text, messages, final, types = asyncio.run(run())
    assert text == final == stack.answer("say hello streamed")
    assert messages == [final]
    assert types[0] == "response.created" and types[-1] == "response.completed"
    [sent] = stack.sent()[sent_before:]
    assert sent.stream and sent.last_user == "say hello streamed"
    _check_rows(stack.usage_since(before, 1))


def test_agents_function_tool_round_trip(stack: Stack) -> None:
    before = len(stack.server.usage_rows(wait_for=0))
    sent_before = len(stack.sent())
    calls: list[str] = []

    @function_tool
    def lookup_code(city: str) -> str:
        """The secret code of a city."""
        calls.append(city)
        return f"{city.upper()}-4711"

    async def run() -> str:
        client = _agents_client(stack.server)
        agent = Agent(name="coder", instructions="Use the tool.", model=ALIAS, tools=[lookup_code])
        result = await Runner.run(agent, "what is the code of Oslo?")
        await client.close()
        return str(result.final_output)

    assert asyncio.run(run()) == stack.tool_answer
    assert calls == ["Oslo"]
    first, second = stack.sent()[sent_before:]
    assert first.tools == ["lookup_code"] and "Use the tool." in first.system and first.tool_result is None
    assert second.tool_result == "OSLO-4711"
    _check_rows(stack.usage_since(before, 2))


def test_langchain_chat_openai_with_the_responses_api(stack: Stack) -> None:
    before = len(stack.server.usage_rows(wait_for=0))
    sent_before = len(stack.sent())
    llm = ChatOpenAI(model=ALIAS, use_responses_api=True, base_url=stack.server.v1,
                     api_key=stack.server.admin_key, max_retries=0, timeout=30)  # type: ignore[arg-type]
    reply = llm.invoke("say hello from langchain")
    assert reply.text == stack.answer("say hello from langchain")
    assert reply.response_metadata["model_name"] == ALIAS
    assert reply.usage_metadata is not None and reply.usage_metadata["output_tokens"] > 0
    chunks = "".join(chunk.text for chunk in llm.stream("say hello again"))
    assert chunks == stack.answer("say hello again")
    first, second = stack.sent()[sent_before:]
    assert first.last_user == "say hello from langchain" and second.last_user == "say hello again"
    assert second.stream
    rows = stack.usage_since(before, 2)
    _check_rows(rows)
    assert rows[0]["completion_tokens"] == reply.usage_metadata["output_tokens"]
