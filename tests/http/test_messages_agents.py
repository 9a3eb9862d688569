"""/v1/messages as coding agents use it (Claude Code on a model that is not Claude), with the anthropic SDK.

System turns inside ``messages``, thinking (asked for, and the upstream's reasoning coming back as
thinking blocks, whole and streamed) and ``metadata.user_id`` hashing, against a real server in
front of a scripted OpenAI-compatible upstream, and a system turn on an Anthropic upstream.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.scripted_openai import ScriptedOpenAI, Turn
from tests.harness import RunningServer, run_server

REASONING = "The user greets me. I should greet back briefly."
ANSWER = "Hello there, friend."


def script(body: dict[str, Any]) -> Turn | None:
    last = json.dumps(body["messages"][-1])
    return Turn(text=ANSWER, reasoning=REASONING) if "think" in last else None


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedOpenAI]:
    with ScriptedOpenAI(script, models=["qwen-upstream", "gpt-4o"], no_reasoning=frozenset({"gpt-4o"})) as fake:
        yield fake


@pytest.fixture(scope="module")
def anthropic_upstream() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(api_key="sk-ant-upstream") as fake:
        yield fake


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, upstream: ScriptedOpenAI,
           anthropic_upstream: FakeAnthropic) -> Iterator[RunningServer]:
    with run_server(
        tmp_path_factory.mktemp("agents"),
        providers={"vllm": {"type": "openai", "base_url": upstream.base_url},
                   "claude": {"type": "anthropic", "base_url": anthropic_upstream.base_url,
                              "api_key": "sk-ant-upstream"}},
        models=[{"alias": "local-coder", "provider": "vllm", "model": "qwen-upstream"},
                {"alias": "plain-coder", "provider": "vllm", "model": "gpt-4o"},
                {"alias": "sonnet", "provider": "claude", "model": "claude-sonnet-4-5"}],
    ) as running:
        yield running


@pytest.fixture
def claude(server: RunningServer) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=server.url, api_key=server.admin_key, max_retries=0, timeout=30) as c:
        yield c


def chats(fake: ScriptedOpenAI, marker: str) -> list[dict[str, Any]]:
    return [r.body for r in fake.requests
            if r.path == "/v1/chat/completions" and marker in json.dumps(r.body.get("messages"))]


def test_a_system_turn_mid_conversation_is_kept_in_place(claude: anthropic.Anthropic,
                                                         upstream: ScriptedOpenAI) -> None:
    msg = claude.messages.create(model="local-coder", max_tokens=100, system="You are a coder.", messages=[
        {"role": "user", "content": "first question sysmid"},
        {"role": "assistant", "content": "first answer"},
        {"role": "system", "content": "Now answer in French."},  # type: ignore[typeddict-item]
        {"role": "user", "content": [{"type": "text", "text": "second question"}]},
    ])
    assert msg.content[0].type == "text" and msg.content[0].text == "echo: second question"
    sent = chats(upstream, "sysmid")[-1]["messages"]
    assert sent == [{"role": "system", "content": "You are a coder."},
                    {"role": "user", "content": "first question sysmid"},
                    {"role": "assistant", "content": "first answer"},
                    {"role": "system", "content": "Now answer in French."},
                    {"role": "user", "content": "second question"}]


def test_a_system_turn_joins_the_system_prompt_of_an_anthropic_upstream(
        claude: anthropic.Anthropic, anthropic_upstream: FakeAnthropic) -> None:
    msg = claude.messages.create(model="sonnet", max_tokens=100, system="Be terse.", messages=[
        {"role": "user", "content": "hello sysanth"},
        {"role": "assistant", "content": "hi"},
        {"role": "system", "content": [{"type": "text", "text": "Mind the tests."}]},  # type: ignore[typeddict-item]
        {"role": "user", "content": "again"},
    ], thinking={"type": "enabled", "budget_tokens": 2048})
    assert msg.content[0].type == "text" and msg.content[0].text == "echo: again"
    sent = [r.body for r in anthropic_upstream.requests if "sysanth" in json.dumps(r.body)][-1]
    assert sent["system"] == [{"type": "text", "text": "Be terse."}, {"type": "text", "text": "Mind the tests."}]
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
    assert "thinking" not in sent and "reasoning_effort" not in sent  # accepted, not sent there


def test_reasoning_comes_back_as_a_thinking_block(claude: anthropic.Anthropic, upstream: ScriptedOpenAI) -> None:
    msg = claude.messages.create(model="local-coder", max_tokens=2000, messages=[
        {"role": "user", "content": "think then say hi, whole"}], thinking={"type": "enabled", "budget_tokens": 1024})
    assert [block.type for block in msg.content] == ["thinking", "text"]
    thinking, text = msg.content
    assert thinking.type == "thinking" and thinking.thinking == REASONING and thinking.signature
    assert text.type == "text" and text.text == ANSWER
    assert chats(upstream, "whole")[-1]["reasoning_effort"] == "low"


def test_reasoning_streams_as_thinking_deltas(claude: anthropic.Anthropic, upstream: ScriptedOpenAI) -> None:
    with claude.messages.stream(model="local-coder", max_tokens=20000, messages=[
        {"role": "user", "content": "think then say hi, streamed"}],
            thinking={"type": "adaptive"}, extra_body={"output_config": {"effort": "high"}}) as stream:
        got = list(stream)
        final = stream.get_final_message()
    starts = [e.content_block.type for e in got if e.type == "content_block_start"]
    assert starts == ["thinking", "text"]
    deltas = [e.delta for e in got if e.type == "content_block_delta"]
    thinking = [d.thinking for d in deltas if d.type == "thinking_delta"]
    signatures = [d.signature for d in deltas if d.type == "signature_delta"]
    assert len(thinking) > 3 and "".join(thinking) == REASONING
    assert len(signatures) == 1 and signatures[0]
    # the signature closes the thinking block, before the text starts
    kinds = [e.type if e.type != "content_block_delta" else e.delta.type for e in got]
    assert kinds.index("signature_delta") < kinds.index("text_delta")
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.content[0].type == "thinking" and final.content[0].signature == signatures[0]
    assert final.content[1].type == "text" and final.content[1].text == ANSWER
    assert chats(upstream, "streamed")[-1]["reasoning_effort"] == "high"


def test_thinking_turned_off_leaves_the_reasoning_out(claude: anthropic.Anthropic, upstream: ScriptedOpenAI) -> None:
    msg = claude.messages.create(model="local-coder", max_tokens=100, thinking={"type": "disabled"},
                                 messages=[{"role": "user", "content": "think quietly"}])
    assert [block.type for block in msg.content] == ["text"]
    assert "reasoning_effort" not in chats(upstream, "quietly")[-1]


def test_thinking_blocks_sent_back_are_dropped_and_user_id_is_hashed(claude: anthropic.Anthropic,
                                                                     upstream: ScriptedOpenAI) -> None:
    user_id = json.dumps({"device_id": "dev-1234", "account_uuid": "", "session_id": "sess-5678"})
    claude.messages.create(model="local-coder", max_tokens=100, metadata={"user_id": user_id}, messages=[
        {"role": "user", "content": "think once, userid"},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": REASONING, "signature": "sig"},
                                          {"type": "text", "text": ANSWER}]},
        {"role": "user", "content": "and again"},
    ])
    sent = chats(upstream, "userid")[-1]
    assert sent["messages"][1] == {"role": "assistant", "content": ANSWER}
    assert sent["user"] == "uid-" + hashlib.sha256(user_id.encode()).hexdigest()[:32]
    assert "dev-1234" not in json.dumps(sent) and "sess-5678" not in json.dumps(sent)


def test_anthropic_headers_reach_an_anthropic_upstream_unchanged(server: RunningServer, claude: anthropic.Anthropic,
                                                                 anthropic_upstream: FakeAnthropic,
                                                                 upstream: ScriptedOpenAI) -> None:
    beta = "interleaved-thinking-2025-05-14,claude-code-20250219"
    headers = {"anthropic-beta": beta, "anthropic-version": "2023-06-01"}
    claude.messages.create(model="sonnet", max_tokens=50, extra_headers=headers,
                           messages=[{"role": "user", "content": "beta whole"}])
    with claude.messages.stream(model="sonnet", max_tokens=50, extra_headers=headers,
                                messages=[{"role": "user", "content": "beta streamed"}]) as stream:
        assert stream.get_final_text() == "echo: beta streamed"
    got = [r for r in anthropic_upstream.requests if "beta " in json.dumps(r.body)]
    assert len(got) == 2
    assert all(r.headers.get("anthropic-beta") == beta and r.headers.get("anthropic-version") == "2023-06-01"
               for r in got)
    assert all(r.headers.get("x-api-key") == "sk-ant-upstream" for r in got)  # the upstream's key, not the client's
    plain = claude.messages.create(model="sonnet", max_tokens=50, messages=[{"role": "user", "content": "no beta"}])
    assert plain.content[0].type == "text"
    no_beta = [r for r in anthropic_upstream.requests if "no beta" in json.dumps(r.body)]
    assert "anthropic-beta" not in no_beta[-1].headers
    claude.messages.create(model="local-coder", max_tokens=50, extra_headers=headers,
                           messages=[{"role": "user", "content": "beta to openai"}])
    assert "anthropic-beta" not in [r for r in upstream.requests if "beta to openai" in json.dumps(r.body)][-1].headers


@pytest.mark.parametrize("stream", [False, True])
def test_an_upstream_that_refuses_reasoning_effort_is_asked_again_without_it(
        claude: anthropic.Anthropic, upstream: ScriptedOpenAI, stream: bool) -> None:
    marker = f"no reasoning here {stream}"
    args: dict[str, Any] = {"model": "plain-coder", "max_tokens": 16000, "thinking": {"type": "enabled",
                            "budget_tokens": 8000}, "messages": [{"role": "user", "content": marker}]}
    if stream:
        with claude.messages.stream(**args) as events:
            text = events.get_final_text()
    else:
        block = claude.messages.create(**args).content[0]
        assert block.type == "text"
        text = block.text
    assert text == f"echo: {marker}"
    sent = chats(upstream, marker)
    assert [b.get("reasoning_effort") for b in sent] == ["medium", None]


def test_count_tokens_takes_a_system_turn(claude: anthropic.Anthropic) -> None:
    hello = [{"role": "user", "content": "Hello there"}]
    base = claude.messages.count_tokens(model="local-coder", messages=hello).input_tokens  # type: ignore[arg-type]
    more = claude.messages.count_tokens(model="local-coder", messages=[  # type: ignore[list-item]
        *hello, {"role": "system", "content": "x" * 400}]).input_tokens
    assert more >= base + 100  # about four characters a token
