"""Function tools on the bundled SmolLM2 (llama.cpp, in-process), through the openai SDK's chat
completions: the grammar holds each call to its tool's JSON schema, the output comes back as
OpenAI ``tool_calls`` (whole and streamed, each checked strictly against the SDK's types), and
the calls and results of the history are rendered into the next prompt. Greedy decoding
(temperature 0) makes each answer the same run to run."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import TypeAdapter

from tests.harness import RunningServer, run_server
from tests.local.bundled import minilm_dir, smollm2_gguf
from tests.protocol.responses_schema import strict

WEATHER = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30},
                                             "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
           "required": ["city", "unit"], "additionalProperties": False}
TIME = {"type": "object", "properties": {"timezone": {"type": "string", "maxLength": 40}},
        "required": ["timezone"], "additionalProperties": False}
TOOLS: list[Any] = [
    {"type": "function", "function": {"name": "get_weather", "description": "The weather in a city.",
                                      "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "description": "The time in a timezone.",
                                      "parameters": TIME}},
]
SCHEMAS = {"get_weather": WEATHER, "get_time": TIME}
ASK: list[Any] = [{"role": "user", "content": "What is the weather in Oslo?"}]

_COMPLETION: TypeAdapter[Any] = TypeAdapter(ChatCompletion)
_CHUNK: TypeAdapter[Any] = TypeAdapter(ChatCompletionChunk)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    hf = tmp_path_factory.mktemp("hf-model")  # never loaded here: only its route is listed
    with run_server(
        tmp_path_factory.mktemp("local-tools"),
        local_models=[{"alias": "smol", "engine": "llamacpp", "model": str(smollm2_gguf()), "context_length": 2048,
                       "threads": 2},
                      {"alias": "smol-one", "engine": "llamacpp", "model": str(smollm2_gguf()),
                       "context_length": 2048, "threads": 2, "parallel": 1, "max_tool_calls": 1},
                      {"alias": "hf", "engine": "transformers", "model": str(hf)},
                      {"alias": "minilm", "engine": "bert", "model": str(minilm_dir())}],
        memory_budget="1GiB",
    ) as running:
        yield running


def _create(client: openai.OpenAI, **kwargs: Any) -> dict[str, Any]:
    """A whole answer, checked strictly against the SDK's ChatCompletion type."""
    kwargs.setdefault("messages", ASK)
    kwargs.setdefault("model", "smol")
    body: dict[str, Any] = client.chat.completions.with_raw_response.create(
        temperature=0, max_tokens=200, **kwargs).http_response.json()
    strict(_COMPLETION, body)
    return body


def _valid_calls(calls: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for call in calls:
        assert call["type"] == "function" and call["id"].startswith("call_") and len(call["id"]) > 10, call
        name = call["function"]["name"]
        arguments = json.loads(call["function"]["arguments"])
        jsonschema.validate(arguments, SCHEMAS[name])
        out.append((name, arguments))
    assert len({c["id"] for c in calls}) == len(calls)
    return out


def test_required_gives_valid_calls(client: openai.OpenAI) -> None:
    body = _create(client, tools=TOOLS, tool_choice="required")
    [choice] = body["choices"]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["role"] == "assistant" and message["content"] is None
    calls = _valid_calls(message["tool_calls"])
    assert calls and all(name in SCHEMAS for name, _ in calls)
    assert body["usage"]["completion_tokens"] > 5


def test_a_named_function_is_the_one_called(client: openai.OpenAI) -> None:
    for name in ("get_time", "get_weather"):
        body = _create(client, tools=TOOLS, tool_choice={"type": "function", "function": {"name": name}})
        [choice] = body["choices"]
        assert choice["finish_reason"] == "tool_calls"
        [(called, _)] = _valid_calls(choice["message"]["tool_calls"])  # one call: the named one
        assert called == name


def test_no_parallel_calls_is_exactly_one_call(client: openai.OpenAI) -> None:
    body = _create(client, tools=TOOLS, tool_choice="required", parallel_tool_calls=False)
    assert len(_valid_calls(body["choices"][0]["message"]["tool_calls"])) == 1


def test_a_model_set_to_one_call_a_turn_makes_one_where_parallel_calls_are_allowed(client: openai.OpenAI) -> None:
    """``max_tool_calls: 1`` (for a small model that repeats its call): the request allows parallel
    calls, the answer holds the first call the same model makes when it may make several."""
    ask: list[Any] = [{"role": "user", "content": "What is the weather in Oslo, Paris and Rome?"}]
    several = _valid_calls(_create(client, messages=ask, tools=TOOLS, tool_choice="required")
                           ["choices"][0]["message"]["tool_calls"])
    body = _create(client, model="smol-one", messages=ask, tools=TOOLS, tool_choice="required")
    assert body["choices"][0]["finish_reason"] == "tool_calls"
    assert len(several) > 1 and _valid_calls(body["choices"][0]["message"]["tool_calls"]) == several[:1]


def test_streamed_deltas_reassemble_to_the_same_calls(server: RunningServer, client: openai.OpenAI) -> None:
    whole = _create(client, tools=TOOLS, tool_choice="required")["choices"][0]["message"]["tool_calls"]
    request = {"model": "smol", "messages": ASK, "tools": TOOLS, "tool_choice": "required", "temperature": 0,
               "max_tokens": 200, "stream": True, "stream_options": {"include_usage": True}}
    with server.http(server.admin_key) as http, http.stream("POST", "/v1/chat/completions", json=request,
                                                            timeout=120) as resp:
        assert resp.status_code == 200
        raw = resp.read().decode()
    frames = [f[len("data: "):] for f in raw.split("\n\n") if f.strip()]
    assert frames[-1] == "[DONE]"
    chunks = [json.loads(f) for f in frames[:-1]]
    for chunk in chunks:
        strict(_CHUNK, chunk)
    assert len({c["id"] for c in chunks}) == 1
    calls: dict[int, dict[str, Any]] = {}
    pieces = 0
    for chunk in chunks:
        for choice in chunk["choices"]:
            assert choice["delta"].get("content") in (None, "")
            for delta in choice["delta"].get("tool_calls") or []:
                if "id" in delta:  # a call's first delta: its id, type and name
                    assert delta["index"] == len(calls) and delta["function"]["arguments"] == ""
                    calls[delta["index"]] = {"id": delta["id"], "type": delta["type"],
                                             "function": {"name": delta["function"]["name"], "arguments": ""}}
                else:
                    assert set(delta) == {"index", "function"} and set(delta["function"]) == {"arguments"}
                    calls[delta["index"]]["function"]["arguments"] += delta["function"]["arguments"]
                    pieces += 1
    finishes = [c["finish_reason"] for c in chunks for c in c["choices"] if c["finish_reason"]]
    assert finishes == ["tool_calls"]
    assert pieces > 3  # the arguments arrive as they are generated, not in one piece
    streamed = [calls[i] for i in sorted(calls)]
    assert [(c["function"]["name"], c["function"]["arguments"]) for c in streamed] == [
        (c["function"]["name"], c["function"]["arguments"]) for c in whole]
    _valid_calls(streamed)
    assert chunks[-1]["usage"]["completion_tokens"] > 5
    # the SDK's own stream reader puts it together the same way
    stream = client.chat.completions.create(model="smol", messages=ASK, tools=TOOLS, tool_choice="required",
                                            temperature=0, max_tokens=200, stream=True)
    args: dict[int, str] = {}
    for chunk in stream:
        for delta in chunk.choices[0].delta.tool_calls or []:
            assert delta.function is not None
            args[delta.index] = args.get(delta.index, "") + (delta.function.arguments or "")
    assert [args[i] for i in sorted(args)] == [c["function"]["arguments"] for c in whole]


def test_auto_answers_in_text_or_in_valid_calls(client: openai.OpenAI) -> None:
    for ask in (ASK, [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]):
        [choice] = _create(client, messages=ask, tools=TOOLS, tool_choice="auto")["choices"]
        message = choice["message"]
        if message.get("tool_calls"):
            assert choice["finish_reason"] == "tool_calls" and message["content"] is None
            assert _valid_calls(message["tool_calls"])
        else:
            assert choice["finish_reason"] == "stop" and message["content"].strip()
            assert not message["content"].startswith("<")


def test_none_answers_in_text(client: openai.OpenAI) -> None:
    [choice] = _create(client, tools=TOOLS, tool_choice="none")["choices"]
    assert choice["finish_reason"] in ("stop", "length") and "tool_calls" not in choice["message"]
    assert choice["message"]["content"]


def test_a_round_trip_puts_the_result_into_the_next_prompt(client: openai.OpenAI) -> None:
    """The call and its result are rendered into the prompt: the answer uses the result."""
    first = _create(client, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_weather"}})
    message = first["choices"][0]["message"]
    [call] = message["tool_calls"]
    history = [*ASK, {"role": "assistant", "content": None, "tool_calls": [call]},
               {"role": "tool", "tool_call_id": call["id"], "content": "Sunny and 23 degrees in Oslo."}]
    body = _create(client, messages=history, tools=TOOLS, tool_choice="none")
    [choice] = body["choices"]
    assert "tool_calls" not in choice["message"] and choice["message"]["content"], choice
    assert "23" in choice["message"]["content"] or "unny" in choice["message"]["content"], choice
    without = _create(client, messages=ASK, tools=TOOLS, tool_choice="none")
    assert body["usage"]["prompt_tokens"] > without["usage"]["prompt_tokens"] + 20  # the call and result are in it


def test_bad_tool_requests_are_400s(client: openai.OpenAI) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
        ({"tools": [{"type": "custom", "custom": {"name": "x"}}], "tool_choice": "auto"}, "tools[0].function"),
        ({"tools": TOOLS, "response_format": {"type": "json_object"}}, "response_format"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {
            "x": {"$ref": "#/$defs/missing"}}}}}], "tool_choice": "required"}, "tools"),
    ]
    for extra, param in cases:
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(model="smol", messages=ASK, max_tokens=5, **extra)
        assert refused.value.param == param, (extra, refused.value.body)


def test_models_lists_tools_for_the_gguf_model_only(client: openai.OpenAI, server: RunningServer) -> None:
    with server.http(server.admin_key) as http:
        caps = {m["id"]: m["capabilities"] for m in http.get("/v1/models").json()["data"]}
    assert (caps["smol"]["tools"], caps["smol"]["tool_choice"], caps["smol"]["parallel_tool_calls"]) == (
        True, ["auto", "none", "required", "function"], True)
    for other in ("hf", "minilm"):  # the transformers engine has no tool grammar yet; an embedding model
        assert (caps[other]["tools"], caps[other]["tool_choice"], caps[other]["parallel_tool_calls"]) == (
            False, ["none"], False)
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="hf", messages=ASK, tools=TOOLS)
    assert (refused.value.code, refused.value.param) == ("unsupported_parameter", "tools")


# -- the engine's grammars, without the server ----------------------------------------------------

@pytest.fixture(scope="module")
def engine() -> Iterator[Any]:
    from switchyard.local.engines import llamacpp
    from switchyard.local.spec import LocalModelSpec

    loaded = llamacpp.load(LocalModelSpec(name="smol", engine="llamacpp", source=str(smollm2_gguf()), device="cpu",
                                          context_length=2048, threads=2))
    yield loaded
    loaded.close()


def _run(engine: Any, prompt: list[int], grammar: object | None, tokens: int = 120) -> tuple[list[int], str]:
    from switchyard.local.engine import SamplingParams
    from switchyard.local.engines.transformers import generate_blocking

    ids, _ = generate_blocking(engine, prompt, SamplingParams(max_tokens=tokens, temperature=0.0), grammar)
    detok = engine.detokenizer()
    return ids, "".join(detok.push(t) for t in ids) + detok.flush()


def test_auto_text_is_decoded_as_freely_as_without_tools(engine: Any) -> None:
    """Under ``auto`` the grammar only decides between a call and text: once the text started
    (the engine then drops the grammar), the tokens are those of free decoding."""
    from switchyard.local.tools import render_messages, tool_plan

    plan = tool_plan({"tools": TOOLS, "tool_choice": "auto"})
    assert plan is not None
    constraint = plan.constraint()
    assert constraint is not None
    story = [{"role": "user", "content": "Write a long story about a dragon who learns to cook."}]
    prompt = engine.render_chat(render_messages(story, plan, engine.native_tools))
    _run(engine, prompt, None)  # both runs below then reuse the same cached prompt (evaluated alike)
    free, free_text = _run(engine, prompt, None)
    auto, auto_text = _run(engine, prompt, engine.compile(constraint))
    assert auto == free and len(free) == 120 and not free_text.startswith("<"), auto_text


def test_required_output_is_calls_in_the_format(engine: Any) -> None:
    from switchyard.local.tools import ToolCallParser, render_messages, tool_plan

    for parallel in (True, False):
        plan = tool_plan({"tools": TOOLS, "tool_choice": "required", "parallel_tool_calls": parallel})
        assert plan is not None
        constraint = plan.constraint()
        assert constraint is not None
        prompt = engine.render_chat(render_messages(ASK, plan, engine.native_tools))
        _, output = _run(engine, prompt, engine.compile(constraint), tokens=400)
        assert output.startswith('<tool_call>\n{"name": "') and output.endswith("}\n</tool_call>"), output
        parser = ToolCallParser(text_allowed=False)
        parser.push(output)
        assert output.count("<tool_call>") == len(parser.calls) and (parallel or len(parser.calls) == 1)
        _valid_calls(parser.calls)
