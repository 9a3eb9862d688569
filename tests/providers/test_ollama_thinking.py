"""Reasoning through the ollama provider: ``reasoning_effort`` / Anthropic ``thinking`` become
``/api/chat``'s ``think``, and ``message.thinking`` comes back as reasoning (whole and streamed)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from tests.fakes import FakeOllama
from tests.fakes.ollama_upstream import THINKING_TEXT
from tests.harness import RunningServer

HELLO = [{"role": "user", "content": "hello there"}]


@pytest.fixture
def claude(gateway: RunningServer) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=gateway.url, api_key=gateway.admin_key, max_retries=0, timeout=30) as sdk:
        yield sdk


def chats(fake: FakeOllama, model: str) -> list[dict[str, Any]]:
    return [r.body for r in fake.requests if r.path == "/api/chat" and r.body.get("model") == model]


@pytest.mark.parametrize(("model", "effort", "think"), [
    ("qwen3:8b", "low", True), ("qwen3:8b", "high", True), ("qwen3:8b", "none", False),
    ("gpt-oss:20b", "low", "low"), ("gpt-oss:20b", "medium", "medium"), ("gpt-oss:20b", "xhigh", "high"),
])
def test_reasoning_effort_becomes_think(client: openai.OpenAI, fake_ollama: FakeOllama, model: str, effort: str,
                                        think: bool | str) -> None:
    answer = client.chat.completions.create(model=f"ollama/{model}", messages=HELLO,
                                            reasoning_effort=effort)  # type: ignore[arg-type]
    assert chats(fake_ollama, model)[-1]["think"] == think
    message = answer.model_dump()["choices"][0]["message"]
    assert message["content"] == "echo: hello there"
    assert message.get("reasoning_content") == (THINKING_TEXT if think else None)


def test_streamed_thinking_is_reasoning_deltas(client: openai.OpenAI, fake_ollama: FakeOllama) -> None:
    stream = client.chat.completions.create(model="ollama/qwen3:8b", messages=HELLO, reasoning_effort="medium",
                                            stream=True)
    deltas = [c.choices[0].delta.model_dump() for c in stream if c.choices]
    assert chats(fake_ollama, "qwen3:8b")[-1]["think"] is True
    reasoning = "".join(d.get("reasoning_content") or "" for d in deltas)
    text = "".join(d.get("content") or "" for d in deltas)
    assert (reasoning, text) == (THINKING_TEXT, "echo: hello there")


def test_without_reasoning_effort_no_think_is_sent(client: openai.OpenAI, fake_ollama: FakeOllama) -> None:
    answer = client.chat.completions.create(model="ollama/qwen3:8b", messages=HELLO)
    assert "think" not in chats(fake_ollama, "qwen3:8b")[-1]
    assert answer.model_dump()["choices"][0]["message"].get("reasoning_content") is None


def test_a_model_that_cannot_think_is_a_400_naming_reasoning_effort(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="ollama/llama-no-think", messages=HELLO, reasoning_effort="low")
    assert info.value.body["param"] == "reasoning_effort"  # type: ignore[index]
    assert "does not support thinking" in info.value.message


def test_anthropic_thinking_becomes_think_and_thinking_blocks(claude: anthropic.Anthropic,
                                                              fake_ollama: FakeOllama) -> None:
    message = claude.messages.create(model="ollama/gpt-oss:20b", max_tokens=2048,
                                     messages=[{"role": "user", "content": "hi"}],
                                     thinking={"type": "enabled", "budget_tokens": 2048})
    assert chats(fake_ollama, "gpt-oss:20b")[-1]["think"] == "low"
    assert [block.type for block in message.content] == ["thinking", "text"]
    assert message.content[0].thinking == THINKING_TEXT  # type: ignore[union-attr]


def test_anthropic_thinking_streams_thinking_deltas(claude: anthropic.Anthropic, fake_ollama: FakeOllama) -> None:
    with claude.messages.stream(model="ollama/qwen3:8b", max_tokens=2048, messages=[{"role": "user", "content": "hi"}],
                                thinking={"type": "enabled", "budget_tokens": 20000}) as stream:
        events = list(stream)
        final = stream.get_final_message()
    assert chats(fake_ollama, "qwen3:8b")[-1]["think"] is True
    thinking = "".join(e.delta.thinking for e in events  # type: ignore[union-attr]
                       if e.type == "content_block_delta" and e.delta.type == "thinking_delta")
    assert thinking == THINKING_TEXT
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.content[1].text == "echo: hi"  # type: ignore[union-attr]


def test_anthropic_thinking_on_a_model_that_cannot_think_is_ignored(claude: anthropic.Anthropic,
                                                                    fake_ollama: FakeOllama) -> None:
    message = claude.messages.create(model="ollama/llama-no-think", max_tokens=256,
                                     messages=[{"role": "user", "content": "hi"}],
                                     thinking={"type": "enabled", "budget_tokens": 2048})
    sent = chats(fake_ollama, "llama-no-think")
    assert sent[-2]["think"] is True and "think" not in sent[-1]  # asked once more without it
    assert [block.type for block in message.content] == ["text"]


def test_anthropic_thinking_disabled_sends_no_think(claude: anthropic.Anthropic, fake_ollama: FakeOllama) -> None:
    message = claude.messages.create(model="ollama/qwen3:8b", max_tokens=256,
                                     messages=[{"role": "user", "content": "hi"}], thinking={"type": "disabled"})
    assert "think" not in chats(fake_ollama, "qwen3:8b")[-1]
    assert [block.type for block in message.content] == ["text"]
