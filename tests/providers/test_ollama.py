"""The ollama provider: OpenAI requests in, Ollama's native API out, and back again."""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest

from tests.conftest import SdkFactory
from tests.contract.openapi import validate
from tests.contract.test_chat import HELLO, WEATHER_TOOL, sse_events
from tests.fakes import FakeOllama
from tests.harness import RunningServer, run_server


def sent_to(fake: FakeOllama, path: str) -> dict[str, object]:
    return dict([r for r in fake.requests if r.path == path][-1].body)


def test_chat_translates_both_ways(client: openai.OpenAI, fake_ollama: FakeOllama) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="llama", messages=[{"role": "system", "content": "be brief"}, *HELLO],
        temperature=0.3, max_tokens=50, stop=["END"], seed=11, extra_body={"keep_alive": "10m"},
    )
    payload = raw.http_response.json()
    validate(payload, "CreateChatCompletionResponse")
    assert payload["model"] == "llama" and payload["object"] == "chat.completion"
    assert payload["choices"][0]["message"]["content"] == "echo: hello there"
    assert payload["usage"]["prompt_tokens"] > 0 and payload["usage"]["completion_tokens"] > 0
    sent = sent_to(fake_ollama, "/api/chat")
    assert sent["model"] == "llama3.2:1b" and sent["stream"] is False and sent["keep_alive"] == "10m"
    assert sent["options"] == {"temperature": 0.3, "num_predict": 50, "stop": ["END"], "seed": 11}
    assert sent["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]


def test_stream_becomes_openai_chunks(gateway: RunningServer, fake_ollama: FakeOllama) -> None:
    events = sse_events(gateway, {"model": "llama", "messages": HELLO, "stream": True,
                                  "stream_options": {"include_usage": True}}, request_id="ollama-stream-1")
    assert events[-1] == "[DONE]"
    for chunk in events[:-1]:
        validate(chunk, "CreateChatCompletionStreamResponse")
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in events[:-1] if c["choices"])
    assert text == "echo: hello there"
    assert events[-3]["choices"][0]["finish_reason"] == "stop"
    assert events[-2]["choices"] == [] and events[-2]["usage"]["completion_tokens"] > 0
    row = gateway.usage_row("ollama-stream-1")
    assert row["provider"] == "ollama" and not row["estimated"] and row["completion_tokens"] > 0


def test_tool_calls_round_trip_through_ollama(client: openai.OpenAI, fake_ollama: FakeOllama) -> None:
    first = client.chat.completions.create(model="llama", messages=HELLO, tools=[WEATHER_TOOL])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.id
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    follow = client.chat.completions.create(model="llama", tools=[WEATHER_TOOL], messages=[
        *HELLO,
        {"role": "assistant", "tool_calls": [{"id": call.id, "type": "function",
                                              "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ])
    assert follow.choices[0].message.content == "tool said: sunny"
    sent = sent_to(fake_ollama, "/api/chat")
    assert sent["messages"][1]["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}  # type: ignore[index]


def test_streamed_tool_calls(gateway: RunningServer) -> None:
    events = sse_events(gateway, {"model": "llama", "messages": HELLO, "stream": True, "tools": [WEATHER_TOOL]})
    calls = [c for e in events[:-1] if e["choices"] for c in e["choices"][0]["delta"].get("tool_calls") or []]
    assert json.loads("".join(c["function"]["arguments"] for c in calls)) == {"city": "Paris"}
    assert [e for e in events[:-1] if e["choices"]][-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_legacy_functions_become_ollama_tools(gateway: RunningServer, fake_ollama: FakeOllama) -> None:
    with gateway.http(gateway.admin_key) as http:
        resp = http.post("/v1/chat/completions", json={
            "model": "llama", "messages": HELLO, "functions": [WEATHER_TOOL["function"]]})
        assert resp.status_code == 200
        assert sent_to(fake_ollama, "/api/chat")["tools"] == [WEATHER_TOOL]
        resp = http.post("/v1/chat/completions", json={
            "model": "llama", "messages": HELLO, "functions": [WEATHER_TOOL["function"]], "function_call": "none"})
        assert resp.status_code == 200 and "tools" not in sent_to(fake_ollama, "/api/chat")


def test_what_ollama_cannot_do_is_refused_by_name(gateway: RunningServer) -> None:
    with gateway.http(gateway.admin_key) as http:
        for extra, param in (({"logprobs": True}, "logprobs"), ({"n": 2}, "n"),
                             ({"tools": [WEATHER_TOOL], "tool_choice": "required"}, "tool_choice")):
            resp = http.post("/v1/chat/completions", json={"model": "llama", "messages": HELLO, **extra})
            assert resp.status_code == 400, extra
            assert resp.json()["error"]["param"] == param
        caps = {m["id"]: m for m in http.get("/v1/models").json()["data"]}["llama"]["capabilities"]
    assert caps["logprobs"] is False and caps["n"] == 1 and caps["tool_choice"] == ["auto", "none"]


def test_json_schema_becomes_format(client: openai.OpenAI, fake_ollama: FakeOllama) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    reply = client.chat.completions.create(model="llama", messages=HELLO, response_format={
        "type": "json_schema", "json_schema": {"name": "c", "schema": schema}})
    assert isinstance(json.loads(reply.choices[0].message.content or ""), dict)
    assert sent_to(fake_ollama, "/api/chat")["format"] == schema


def test_images_go_as_base64(client: openai.OpenAI, fake_ollama: FakeOllama) -> None:
    client.chat.completions.create(model="llama", messages=[{"role": "user", "content": [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]}])
    msg = sent_to(fake_ollama, "/api/chat")["messages"][0]  # type: ignore[index]
    assert msg == {"role": "user", "content": "what is this", "images": ["iVBORw0KGgo="]}
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="llama", messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "http://127.0.0.1/cat.png"}}]}])


def test_prefix_routing_sends_the_name_after_the_slash(client: openai.OpenAI, fake_ollama: FakeOllama) -> None:
    reply = client.chat.completions.create(model="ollama/qwen2.5:3b", messages=HELLO)
    assert reply.model == "ollama/qwen2.5:3b"
    assert sent_to(fake_ollama, "/api/chat")["model"] == "qwen2.5:3b"


def test_default_provider_takes_unmatched_names(sdk: SdkFactory, tmp_path: Path, fake_ollama: FakeOllama) -> None:
    with run_server(tmp_path, default_provider="home",
                    providers={"home": {"type": "ollama", "base_url": fake_ollama.base_url + "/v1"}}) as server:
        client = sdk(server.v1, server.admin_key)
        reply = client.chat.completions.create(model="qwen2.5:3b", messages=HELLO)
    assert reply.choices[0].message.content == "echo: hello there"
    assert sent_to(fake_ollama, "/api/chat")["model"] == "qwen2.5:3b"


def test_legacy_completion_uses_generate(client: openai.OpenAI, fake_ollama: FakeOllama) -> None:
    raw = client.completions.with_raw_response.create(model="llama", prompt="once upon a time")
    validate(raw.http_response.json(), "CreateCompletionResponse")
    assert raw.parse().choices[0].text
    assert sent_to(fake_ollama, "/api/generate")["prompt"] == "once upon a time"


def test_embeddings_use_api_embed_with_keep_alive(gateway: RunningServer, fake_ollama: FakeOllama) -> None:
    with gateway.http(gateway.admin_key) as http:
        resp = http.post("/v1/embeddings", json={"model": "ollama-embed", "input": ["a", "b"], "keep_alive": 0})
    assert resp.status_code == 200
    validate(resp.json(), "CreateEmbeddingResponse")
    sent = sent_to(fake_ollama, "/api/embed")
    assert sent == {"model": "nomic-embed-text", "input": ["a", "b"], "keep_alive": 0}


def test_n_above_one_is_a_clear_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="llama", messages=HELLO, n=2)
    assert info.value.body["param"] == "n"  # type: ignore[index]


def test_upstream_errors_and_cut_streams(gateway: RunningServer) -> None:
    with gateway.http(gateway.admin_key) as http:
        failed = http.post("/v1/chat/completions", json={"model": "ollama/error-500", "messages": HELLO})
        missing = http.post("/v1/chat/completions", json={"model": "ollama/error-503", "messages": HELLO})
    assert failed.status_code == 502 and missing.status_code == 503
    events = sse_events(gateway, {"model": "ollama/fail-mid-stream", "messages": HELLO, "stream": True})
    assert "[DONE]" not in events and "error" in events[-1]


def test_disconnect_closes_the_ollama_stream(gateway: RunningServer, fake_ollama: FakeOllama) -> None:
    before = fake_ollama.disconnects
    with gateway.http(gateway.admin_key) as http, http.stream(
        "POST", "/v1/chat/completions", json={"model": "ollama/slow-stream", "messages": HELLO, "stream": True}
    ) as resp:
        lines = resp.iter_lines()
        next(lines)
    assert fake_ollama.wait_for_disconnects(before + 1, timeout=3.0)


def test_models_lists_what_ollama_serves_under_routable_names(sdk: SdkFactory, tmp_path: Path) -> None:
    with FakeOllama(models=["qwen2.5:3b", "nomic-embed-text"]) as home, FakeOllama(models=["phi3"]) as lab, run_server(
        tmp_path, default_provider="home",
        providers={"home": {"type": "ollama", "base_url": home.base_url},
                   "lab": {"type": "ollama", "base_url": lab.base_url, "prefix_routing": True}},
        models=[{"alias": "chat", "provider": "home", "model": "qwen2.5:3b"}],
    ) as server:
        client = sdk(server.v1, server.admin_key)
        ids = [m.id for m in client.models.list()]
        assert ids == ["chat", "qwen2.5:3b", "nomic-embed-text:latest", "lab/phi3:latest"]  # as /api/tags names them
        validate(client.models.with_raw_response.list().http_response.json(), "ListModelsResponse")
        assert client.models.retrieve("lab/phi3:latest").owned_by == "ollama"
        assert client.chat.completions.create(model="lab/phi3", messages=HELLO).choices
        with server.http(server.admin_key) as http:
            scoped = http.post("/admin/keys", json={"name": "s", "models": ["lab/*"]}).json()["key"]
        assert [m.id for m in sdk(server.v1, scoped).models.list()] == ["lab/phi3:latest"]
        tags_calls = len([r for r in home.requests if r.path == "/api/tags"])
        client.models.list()
        assert len([r for r in home.requests if r.path == "/api/tags"]) == tags_calls  # cached
    # an unreachable upstream lists nothing, and listing still answers
    with run_server(tmp_path / "down", default_provider="gone",
                    providers={"gone": {"type": "ollama", "base_url": "http://127.0.0.1:9"}}) as server:
        assert sdk(server.v1, server.admin_key).models.list().data == []


def test_admin_upstreams_reports_models_and_what_ollama_has_loaded(gateway: RunningServer,
                                                                    fake_ollama: FakeOllama) -> None:
    with gateway.http(gateway.admin_key) as http:
        http.post("/v1/chat/completions", json={"model": "llama", "messages": HELLO, "keep_alive": "5m"})
        data = {u["name"]: u for u in http.get("/admin/upstreams").json()["data"]}
        plain = http.post("/admin/keys", json={"name": "not-admin"}).json()["key"]
    with gateway.http(plain) as http:
        assert http.get("/admin/upstreams").status_code == 403
    ollama = data["ollama"]
    assert ollama["reachable"] is True and ollama["type"] == "ollama" and ollama["prefix_routing"] is True
    assert "llama3.2:1b" in [m["name"] for m in ollama["running"]]
    assert data["fake"]["reachable"] is True and "running" not in data["fake"]
    dead = next(u for name, u in data.items() if name.startswith("openai@"))
    assert dead["reachable"] is False and dead["error"]


def test_loaded_ollama_models_and_their_memory_are_metrics(tmp_path: Path) -> None:
    import time

    with FakeOllama() as ollama, run_server(
        tmp_path, loaded_models_poll_interval=0.1,
        providers={"box": {"type": "ollama", "base_url": ollama.base_url}},
        models=[{"alias": "m", "provider": "box", "model": "llama3.2:1b"}],
    ) as server, server.http(server.admin_key) as http:
        assert http.post("/v1/chat/completions", json={"model": "m", "messages": HELLO, "keep_alive": "5m"}
                         ).status_code == 200
        line = 'switchyard_loaded_model_bytes{model="llama3.2:1b",provider="box"} 3.2e+09'
        deadline = time.monotonic() + 5
        while line not in http.get("/metrics").text and time.monotonic() < deadline:
            time.sleep(0.05)
        text = http.get("/metrics").text
        assert line in text and 'switchyard_loaded_model_vram_bytes{model="llama3.2:1b",provider="box"}' in text
        http.post("/v1/chat/completions", json={"model": "m", "messages": HELLO, "keep_alive": 0})  # unloads after
        ollama_unloaded = 'model="llama3.2:1b"'
        deadline = time.monotonic() + 5
        while ollama_unloaded in http.get("/metrics").text and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ollama_unloaded not in http.get("/metrics").text.split("switchyard_loaded_model_bytes")[-1]
