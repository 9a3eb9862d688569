"""openai-agents and langchain-openai, with their Responses models, through Switchyard.

Each client is pointed at the real server (a real key) in front of the fake OpenAI-compatible
upstream; what the upstream receives and what the client gets back are both checked.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
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
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.harness import RunningServer, run_server


def _plan(body: dict[str, Any]) -> tuple[str, Any] | None:
    """The fake's script: call ``lookup_code`` when offered (once), else answer in text."""
    messages = body["messages"]
    tools = [t["function"]["name"] for t in body.get("tools") or []]
    if "lookup_code" in tools and messages[-1].get("role") != "tool":
        return "tool", ("lookup_code", json.dumps({"city": "Oslo"}))
    if messages[-1].get("role") == "tool":
        return "text", f"The code is {messages[-1]['content']}."
    return "text", "hello from the fake upstream"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, FakeOpenAI]]:
    data: Path = tmp_path_factory.mktemp("clients")
    with FakeOpenAI(models=["up-model"], planner=_plan) as upstream, run_server(
        data,
        providers={"up": {"type": "openai", "base_url": upstream.base_url}},
        models=[{"alias": "agent-model", "provider": "up", "model": "up-model"}],
    ) as server:
        yield server, upstream


def _agents_client(server: RunningServer) -> AsyncOpenAI:
    client = AsyncOpenAI(base_url=server.v1, api_key=server.admin_key, max_retries=0, timeout=30)
    set_default_openai_client(client, use_for_tracing=False)
    set_default_openai_api("responses")
    set_tracing_disabled(True)
    return client


def test_agents_runner_text(stack: tuple[RunningServer, FakeOpenAI]) -> None:
    server, upstream = stack

    async def run() -> str:
        client = _agents_client(server)
        agent = Agent(name="helper", instructions="Be brief.", model="agent-model")
        result = await Runner.run(agent, "say hello")
        await client.close()
        return str(result.final_output)

    assert asyncio.run(run()) == "hello from the fake upstream"
    body = [r.body for r in upstream.requests if r.path == "/v1/chat/completions"][-1]
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert body["messages"][-1]["content"] == "say hello"


def test_agents_runner_streamed(stack: tuple[RunningServer, FakeOpenAI]) -> None:
    server, _ = stack

    async def run() -> tuple[str, list[str], str]:
        client = _agents_client(server)
        agent = Agent(name="helper", instructions="Be brief.", model="agent-model")
        streamed = Runner.run_streamed(agent, "say hello")
        deltas: list[str] = []
        messages: list[str] = []
        async for event in streamed.stream_events():
            if event.type == "raw_response_event" and event.data.type == "response.output_text.delta":
                deltas.append(event.data.delta)
            elif event.type == "run_item_stream_event" and event.item.type == "message_output_item":
                messages.append(ItemHelpers.text_message_output(event.item))
        await client.close()
        return "".join(deltas), messages, str(streamed.final_output)

    text, messages, final = asyncio.run(run())
    assert text == final == "hello from the fake upstream"
    assert messages == [final]


def test_agents_function_tool_round_trip(stack: tuple[RunningServer, FakeOpenAI]) -> None:
    server, upstream = stack
    calls: list[str] = []

    @function_tool
    def lookup_code(city: str) -> str:
        """The secret code of a city."""
        calls.append(city)
        return f"{city.upper()}-4711"

    async def run() -> str:
        client = _agents_client(server)
        agent = Agent(name="coder", instructions="Use the tool.", model="agent-model", tools=[lookup_code])
        result = await Runner.run(agent, "what is the code of Oslo?")
        await client.close()
        return str(result.final_output)

    assert asyncio.run(run()) == "The code is OSLO-4711."
    assert calls == ["Oslo"]
    last = [r.body for r in upstream.requests if r.path == "/v1/chat/completions"][-1]
    assert last["messages"][-1]["role"] == "tool" and last["messages"][-1]["content"] == "OSLO-4711"
    assert last["messages"][-2]["tool_calls"][0]["function"]["name"] == "lookup_code"


def test_langchain_chat_openai_with_the_responses_api(stack: tuple[RunningServer, FakeOpenAI]) -> None:
    server, upstream = stack
    llm = ChatOpenAI(model="agent-model", use_responses_api=True, base_url=server.v1,
                     api_key=server.admin_key, max_retries=0, timeout=30)  # type: ignore[arg-type]
    reply = llm.invoke("say hello from langchain")
    assert reply.text == "hello from the fake upstream"
    assert reply.response_metadata["model_name"] == "agent-model"
    assert reply.usage_metadata is not None and reply.usage_metadata["output_tokens"] > 0
    body = [r.body for r in upstream.requests if r.path == "/v1/chat/completions"][-1]
    assert body["messages"][-1]["content"] == "say hello from langchain"
    chunks = "".join(chunk.text for chunk in llm.stream("say hello again"))
    assert chunks == "hello from the fake upstream"


def test_agents_and_langchain_on_a_claude_model(tmp_path: Path) -> None:
    """The same clients on an Anthropic upstream: the fake calls the first tool, then says what it returned."""
    key = "sk-ant-upstream-0123456789"

    @function_tool
    def lookup_code(city: str) -> str:
        """The secret code of a city."""
        return f"{city.upper()}-4711"

    with FakeAnthropic(api_key=key, tool_arguments={"city": "Oslo"}) as fake, run_server(
        tmp_path / "data", providers={"claude": {"type": "anthropic", "base_url": fake.base_url, "api_key": key}},
        models=[{"alias": "claude", "provider": "claude", "model": "claude-sonnet-4-5"}],
    ) as server:
        async def run() -> tuple[str, str]:
            client = _agents_client(server)
            agent = Agent(name="coder", instructions="Use the tool.", model="claude", tools=[lookup_code])
            with_tool = await Runner.run(agent, "what is the code of Oslo?")
            plain = Agent(name="helper", instructions="Be brief.", model="claude")
            streamed = Runner.run_streamed(plain, "say hello")
            async for _ in streamed.stream_events():
                pass
            await client.close()
            return str(with_tool.final_output), str(streamed.final_output)

        tool_answer, streamed_answer = asyncio.run(run())
        llm = ChatOpenAI(model="claude", use_responses_api=True, base_url=server.v1,
                         api_key=server.admin_key, max_retries=0, timeout=30)  # type: ignore[arg-type]
        reply = llm.invoke("hello from langchain")
    assert tool_answer == "tool said: OSLO-4711"
    assert streamed_answer == "echo: say hello"
    assert reply.text == "echo: hello from langchain"
    sent = fake.messages_requests()
    assert len(sent) == 4 and [t["name"] for t in sent[0]["tools"]] == ["lookup_code"]
    assert "Use the tool." in json.dumps(sent[0]["system"]) and "Be brief." in json.dumps(sent[2]["system"])
