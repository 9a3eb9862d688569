"""openai-agents and langchain-openai, with their Responses models, on the bundled SmolLM2
(llama.cpp, in-process). Greedy decoding (temperature 0) keeps the answers the same run to run;
the stream events the Runner receives are checked strictly against OpenAI's schemas, and each
request leaves a usage row with endpoint ``responses`` and the engine's own token counts."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from agents import Agent, ModelSettings, Runner, function_tool
from langchain_openai import ChatOpenAI

from tests.clients.test_python_clients import _agents_client
from tests.harness import RunningServer, run_server
from tests.local.bundled import smollm2_gguf
from tests.protocol.responses_schema import strict_event

CAPITAL = "What is the capital of France? Answer in one sentence."
GREEDY = ModelSettings(temperature=0)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with run_server(
        tmp_path_factory.mktemp("local-clients"),
        local_models=[{"alias": "smol", "engine": "llamacpp", "model": str(smollm2_gguf()), "context_length": 2048,
                       "threads": 2}],
        memory_budget="1GiB",
    ) as running:
        yield running


def _new_rows(server: RunningServer, before: int, count: int) -> list[dict[str, Any]]:
    rows = server.usage_rows(wait_for=before + count, timeout=30)[before:]
    assert len(rows) == count, rows
    for row in rows:
        assert (row["endpoint"], row["model"], row["status"], row["estimated"]) == ("responses", "smol", 200, False)
        assert row["prompt_tokens"] > 10 and row["completion_tokens"] > 3, row
    return rows


def test_agents_runner_text(server: RunningServer) -> None:
    before = len(server.usage_rows(wait_for=0))

    async def run() -> tuple[str, int, int]:
        client = _agents_client(server)
        agent = Agent(name="helper", instructions="Answer briefly.", model="smol", model_settings=GREEDY)
        result = await Runner.run(agent, CAPITAL)
        await client.close()
        usage = result.context_wrapper.usage
        return str(result.final_output), usage.input_tokens, usage.output_tokens

    answer, input_tokens, output_tokens = asyncio.run(run())
    assert "Paris" in answer, answer
    [row] = _new_rows(server, before, 1)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (input_tokens, output_tokens)


def test_agents_runner_streamed(server: RunningServer) -> None:
    before = len(server.usage_rows(wait_for=0))

    async def run() -> tuple[list[dict[str, Any]], str]:
        client = _agents_client(server)
        agent = Agent(name="helper", instructions="Answer briefly.", model="smol", model_settings=GREEDY)
        streamed = Runner.run_streamed(agent, CAPITAL)
        events: list[dict[str, Any]] = []
        async for event in streamed.stream_events():
            if event.type == "raw_response_event":
                events.append(event.data.model_dump(mode="json", exclude_unset=True))
        await client.close()
        return events, str(streamed.final_output)

    events, final = asyncio.run(run())
    for event in events:
        strict_event(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[0]["type"] == "response.created" and events[-1]["type"] == "response.completed"
    deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    assert len(deltas) > 3 and "".join(deltas) == final and "Paris" in final, final
    [row] = _new_rows(server, before, 1)
    assert row["completion_tokens"] == events[-1]["response"]["usage"]["output_tokens"]


def test_langchain_chat_openai_with_the_responses_api(server: RunningServer) -> None:
    before = len(server.usage_rows(wait_for=0))
    llm = ChatOpenAI(model="smol", use_responses_api=True, base_url=server.v1, temperature=0,
                     api_key=server.admin_key, max_retries=0, timeout=120)  # type: ignore[arg-type]
    reply = llm.invoke(CAPITAL)
    assert "Paris" in reply.text, reply.text
    assert reply.response_metadata["model_name"] == "smol"
    assert reply.usage_metadata is not None
    streamed = "".join(chunk.text for chunk in llm.stream(CAPITAL))
    assert streamed == reply.text  # greedy: the same answer, streamed
    rows = _new_rows(server, before, 2)
    assert rows[0]["completion_tokens"] == reply.usage_metadata["output_tokens"]


def test_agents_runner_with_a_function_tool(server: RunningServer) -> None:
    """``tool_choice="required"``: the first turn must call the tool (the grammar holds the call to
    its schema); the Runner runs it, resets the choice, and the second turn answers with its result."""
    before = len(server.usage_rows(wait_for=0))
    calls: list[str] = []

    @function_tool
    def lookup_code(city: str) -> str:
        """The secret code of a city."""
        calls.append(city)
        return f"The code of {city} is SY-4711."

    async def run() -> tuple[str, list[str]]:
        client = _agents_client(server)
        agent = Agent(name="coder", instructions="Use the tool, then answer with the code.", model="smol",
                      tools=[lookup_code], model_settings=ModelSettings(temperature=0, tool_choice="required"))
        try:
            result = await Runner.run(agent, "What is the code of Oslo?")
        finally:
            await client.close()
        return str(result.final_output), [item.type for item in result.new_items]

    final, items = asyncio.run(run())
    assert len(calls) >= 1 and all(isinstance(c, str) and c for c in calls), calls
    assert items.count("tool_call_item") == items.count("tool_call_output_item") == len(calls), items
    assert items[0] == "tool_call_item" and items[-1] == "message_output_item", items
    assert "4711" in final, final  # answered with the tool's output
    rows = _new_rows(server, before, 2)
    assert rows[1]["prompt_tokens"] > rows[0]["prompt_tokens"]  # the call and its output are in the prompt
