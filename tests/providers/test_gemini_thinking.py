"""Reasoning through the gemini provider: ``reasoning_effort`` / Anthropic ``thinking`` become
``thinkingConfig``, and Gemini's thought summaries come back as reasoning (whole and streamed)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from tests.fakes.gemini_upstream import THOUGHT_TEXT, FakeGemini
from tests.harness import RunningServer, run_server

KEY = "AIzaSyFAKE-gemini-thinking-key-0123456789"
HELLO = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeGemini]:
    with FakeGemini(api_key=KEY) as gemini:
        yield gemini


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, fake: FakeGemini) -> Iterator[RunningServer]:
    provider = {"type": "gemini", "base_url": fake.base_url, "api_key": KEY, "cooldown_failures": 0}
    with run_server(
        tmp_path_factory.mktemp("gemini-thinking"),
        providers={"gem": provider},
        models=[
            {"alias": "flash", "provider": "gem", "model": "gemini-2.5-flash"},
            {"alias": "three", "provider": "gem", "model": "gemini-3-pro-preview"},
        ],
    ) as running:
        yield running


@pytest.fixture
def client(server: RunningServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.v1, api_key=server.admin_key, max_retries=0, timeout=30) as sdk:
        yield sdk


@pytest.fixture
def claude(server: RunningServer) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=server.url, api_key=server.admin_key, max_retries=0, timeout=30) as sdk:
        yield sdk


def thinking_config(fake: FakeGemini) -> Any:
    body = [r for r in fake.requests if ":generateContent" in r.path or ":streamGenerateContent" in r.path][-1].body
    return (body.get("generationConfig") or {}).get("thinkingConfig")


@pytest.mark.parametrize(("effort", "model", "expected"), [
    ("low", "flash", {"includeThoughts": True, "thinkingBudget": 1024}),
    ("medium", "flash", {"includeThoughts": True, "thinkingBudget": 8192}),
    ("high", "flash", {"includeThoughts": True, "thinkingBudget": 24576}),
    ("minimal", "flash", {"includeThoughts": True, "thinkingBudget": 512}),
    ("low", "three", {"includeThoughts": True, "thinkingLevel": "low"}),
    ("medium", "three", {"includeThoughts": True, "thinkingLevel": "high"}),
])
def test_reasoning_effort_becomes_thinking_config(client: openai.OpenAI, fake: FakeGemini, effort: str, model: str,
                                                  expected: dict[str, Any]) -> None:
    answer = client.chat.completions.create(model=model, messages=HELLO, reasoning_effort=effort)  # type: ignore[arg-type]
    assert thinking_config(fake) == expected
    message = answer.model_dump()["choices"][0]["message"]
    assert message["content"] == "echo: hello there"  # the thought summary is not the answer
    assert message["reasoning_content"] == THOUGHT_TEXT
    assert answer.usage is not None and answer.usage.completion_tokens_details is not None
    assert answer.usage.completion_tokens_details.reasoning_tokens == 12


def test_the_budget_leaves_room_for_the_answer(client: openai.OpenAI, fake: FakeGemini) -> None:
    client.chat.completions.create(model="flash", messages=HELLO, reasoning_effort="high", max_tokens=4000)
    assert thinking_config(fake) == {"includeThoughts": True, "thinkingBudget": 2000}
    client.chat.completions.create(model="flash", messages=HELLO, reasoning_effort="high", max_tokens=100)
    assert thinking_config(fake) == {"includeThoughts": True, "thinkingBudget": 512}


def test_streamed_thoughts_are_reasoning_deltas(client: openai.OpenAI, fake: FakeGemini) -> None:
    stream = client.chat.completions.create(model="flash", messages=HELLO, reasoning_effort="high", stream=True)
    deltas = [c.choices[0].delta.model_dump() for c in stream if c.choices]
    assert thinking_config(fake) == {"includeThoughts": True, "thinkingBudget": 24576}
    reasoning = "".join(d.get("reasoning_content") or "" for d in deltas)
    text = "".join(d.get("content") or "" for d in deltas)
    assert (reasoning, text) == (THOUGHT_TEXT, "echo: hello there")
    first_reasoning = next(i for i, d in enumerate(deltas) if d.get("reasoning_content"))
    first_text = next(i for i, d in enumerate(deltas) if d.get("content"))
    assert first_reasoning < first_text


def test_without_reasoning_effort_nothing_is_sent_and_no_reasoning_comes(client: openai.OpenAI,
                                                                         fake: FakeGemini) -> None:
    answer = client.chat.completions.create(model="flash", messages=HELLO)
    assert thinking_config(fake) is None
    assert answer.model_dump()["choices"][0]["message"].get("reasoning_content") is None
    client.chat.completions.create(model="flash", messages=HELLO, reasoning_effort="none")  # type: ignore[arg-type]
    assert thinking_config(fake) is None


def test_unknown_reasoning_effort_is_a_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="flash", messages=HELLO, reasoning_effort="extreme")  # type: ignore[arg-type]
    assert "reasoning_effort" in info.value.message


def test_anthropic_thinking_becomes_a_budget_and_thinking_blocks(claude: anthropic.Anthropic,
                                                                 fake: FakeGemini) -> None:
    message = claude.messages.create(model="flash", max_tokens=32000, messages=[{"role": "user", "content": "hi"}],
                                     thinking={"type": "enabled", "budget_tokens": 10000})
    assert thinking_config(fake) == {"includeThoughts": True, "thinkingBudget": 8192}
    kinds = [block.type for block in message.content]
    assert kinds == ["thinking", "text"]
    assert message.content[0].thinking == THOUGHT_TEXT  # type: ignore[union-attr]
    assert message.content[1].text == "echo: hi"  # type: ignore[union-attr]


def test_anthropic_adaptive_thinking_streams_thinking_deltas(claude: anthropic.Anthropic, fake: FakeGemini) -> None:
    with claude.messages.stream(model="three", max_tokens=2048, messages=[{"role": "user", "content": "hi"}],
                                thinking={"type": "adaptive"}) as stream:  # type: ignore[typeddict-item]
        events = list(stream)
        final = stream.get_final_message()
    assert thinking_config(fake) == {"includeThoughts": True, "thinkingLevel": "high"}
    deltas = [e.delta for e in events if e.type == "content_block_delta"]
    thinking = "".join(d.thinking for d in deltas if d.type == "thinking_delta")
    assert thinking == THOUGHT_TEXT
    assert [b.type for b in final.content] == ["thinking", "text"]


def test_anthropic_thinking_disabled_sends_nothing_and_shows_nothing(claude: anthropic.Anthropic,
                                                                     fake: FakeGemini) -> None:
    message = claude.messages.create(model="flash", max_tokens=256, messages=[{"role": "user", "content": "hi"}],
                                     thinking={"type": "disabled"})
    assert thinking_config(fake) is None
    assert [block.type for block in message.content] == ["text"]
