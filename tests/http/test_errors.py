"""Every error class, as the openai SDK and a raw HTTP client see it. Never a 500 for bad input."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import UPSTREAM_KEY, SdkFactory
from tests.contract.openapi import validate
from tests.contract.test_chat import HELLO, sse_events
from tests.fakes import FakeOpenAI
from tests.harness import RunningServer, run_server


def error_of(resp: httpx.Response) -> dict[str, Any]:
    body = resp.json()
    validate(body, "ErrorResponse")
    assert UPSTREAM_KEY not in resp.text
    return dict(body["error"])


def test_missing_wrong_and_malformed_keys_get_one_constant_401(gateway: RunningServer) -> None:
    body = {"model": "gpt-4o-mini", "messages": HELLO}
    with httpx.Client(base_url=gateway.url) as http:
        answers = [
            http.post("/v1/chat/completions", json=body),
            http.post("/v1/chat/completions", json=body, headers={"Authorization": "Bearer sk-sy-wrong"}),
            http.post("/v1/chat/completions", json=body, headers={"x-api-key": "sk-sy-wrong"}),
            http.post("/v1/chat/completions", json=body, headers={"Authorization": "Basic abc"}),
            http.get("/v1/models", headers={"Authorization": "Bearer " + "x" * 5000}),
        ]
    assert {r.status_code for r in answers} == {401}
    assert len({r.content for r in answers}) == 1
    assert error_of(answers[0])["code"] == "invalid_api_key"


def test_sdk_raises_authentication_error(sdk: SdkFactory, gateway: RunningServer) -> None:
    bad = sdk(gateway.v1, "sk-sy-nope")
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="gpt-4o-mini", messages=HELLO)


@pytest.mark.parametrize("model", ["no-such-model", "disabled", "ollama-but-no-slash"])
def test_unknown_or_disabled_model_is_404_model_not_found(client: openai.OpenAI, model: str) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model=model, messages=HELLO)
    assert info.value.code == "model_not_found"
    assert info.value.body["param"] == "model"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "gpt-4o-mini", "messages": []}, "messages"),
        ({"model": "gpt-4o-mini", "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"model": "gpt-4o-mini", "messages": HELLO, "temperature": 9}, "temperature"),
        ({"model": "gpt-4o-mini", "messages": HELLO, "n": "two"}, "n"),
        ({"messages": HELLO}, "model"),
        ({"model": "gpt-4o-mini", "messages": [{"role": "tool", "content": "x"}]}, "messages[0]"),
        ({"model": "gpt-4o-mini", "messages": HELLO, "response_format": {"type": "xml"}}, "response_format"),
    ],
)
def test_invalid_requests_are_400_with_param(gateway: RunningServer, body: dict[str, Any], param: str) -> None:
    with gateway.http(gateway.admin_key) as http:
        resp = http.post("/v1/chat/completions", json=body)
    assert resp.status_code == 400
    err = error_of(resp)
    assert err["type"] == "invalid_request_error"
    assert err["param"] == param


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b'{"model": "\xff\xfe"}', b"[" * 100_000 + b"]" * 100_000, b"", b"[]", b"null", b'"s"',
     b'{"model": 5, "messages": "x"}', b'{"model": "gpt-4o-mini", "messages": [null]}'],
    ids=["malformed", "bad-utf8", "deep-nesting", "empty", "array", "null", "string", "wrong-types", "null-msg"],
)
def test_bad_bodies_are_400_never_500(gateway: RunningServer, raw: bytes) -> None:
    with gateway.http(gateway.admin_key) as http:
        for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings"):
            resp = http.post(path, content=raw, headers={"content-type": "application/json"})
            assert resp.status_code == 400, (path, resp.text)
            error_of(resp)


def test_body_over_the_limit_is_413(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    with run_server(tmp_path, max_body_bytes=2048, providers={
        "fake": {"type": "openai", "base_url": fake_openai.base_url, "api_key": UPSTREAM_KEY}},
        models=[{"alias": "gpt-4o-mini", "provider": "fake"}],
    ) as server, server.http(server.admin_key) as http:
        big = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * 5000}]}
        assert http.post("/v1/chat/completions", json=big).status_code == 413

        def chunked() -> Any:  # no content-length: the limit holds while reading
            yield b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "'
            for _ in range(10):
                yield b"y" * 1000
            yield b'"}]}'

        resp = http.post("/v1/chat/completions", content=chunked(), headers={"content-type": "application/json"})
        assert resp.status_code == 413
        assert error_of(resp)["code"] == "request_too_large"
        assert http.post("/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": HELLO}).status_code == 200


@pytest.mark.parametrize(
    ("model", "status", "exc", "retry_after"),
    [
        ("error-429", 429, openai.RateLimitError, "7"),
        ("error-500", 502, openai.APIStatusError, None),
        ("error-503", 503, openai.InternalServerError, "3"),
        ("error-400", 400, openai.BadRequestError, None),
        ("error-401", 502, openai.APIStatusError, None),
        ("dead", 502, openai.APIStatusError, None),
        ("impatient", 504, openai.APIStatusError, None),
    ],
)
def test_upstream_failures_are_mapped(
    client: openai.OpenAI, model: str, status: int, exc: type[Exception], retry_after: str | None
) -> None:
    with pytest.raises(exc) as info:
        client.chat.completions.create(model=model, messages=HELLO)
    err = info.value
    assert isinstance(err, openai.APIStatusError)
    assert err.status_code == status
    assert err.response.headers.get("retry-after") == retry_after
    validate(err.response.json(), "ErrorResponse")
    text = err.response.text
    assert UPSTREAM_KEY not in text and "sk-abc" not in text  # the upstream's key hint is not echoed
    if model == "error-400":
        assert err.body["param"] == "temperature"  # type: ignore[index]


def test_upstream_failing_mid_stream_ends_with_an_error_event_and_no_done(gateway: RunningServer) -> None:
    events = sse_events(gateway, {"model": "fail-mid-stream", "messages": HELLO, "stream": True},
                        request_id="mid-stream-1")
    assert "[DONE]" not in events
    assert len(events) >= 4
    validate(events[-1], "ErrorResponse")
    assert events[-1]["error"]["type"] == "upstream_error"
    row = gateway.usage_row("mid-stream-1")
    assert row["status"] == 502 and row["estimated"] and row["completion_tokens"] >= 3


def test_client_disconnect_cancels_the_upstream_and_is_accounted(
    gateway: RunningServer, fake_openai: FakeOpenAI
) -> None:
    before = fake_openai.disconnects
    with gateway.http(gateway.admin_key) as http, http.stream(
        "POST", "/v1/chat/completions", json={"model": "slow-stream", "messages": HELLO, "stream": True},
        headers={"x-request-id": "disconnect-1"},
    ) as resp:
        lines = resp.iter_lines()
        got = [line for line in (next(lines) for _ in range(4)) if line.startswith("data:")]
        assert got
    # the client is gone; the fake upstream must see its connection close well before 50 * 0.2 s
    started = time.monotonic()
    assert fake_openai.wait_for_disconnects(before + 1, timeout=3.0)
    assert time.monotonic() - started < 3.0
    row = gateway.usage_row("disconnect-1")
    assert row["status"] == 499 and row["streamed"] and row["estimated"]


def test_max_concurrent_cap_answers_429_with_retry_after(gateway: RunningServer) -> None:
    with gateway.holding_stream("capped"), gateway.http(gateway.admin_key) as http:
        resp = http.post("/v1/chat/completions", json={"model": "capped", "messages": HELLO})
    assert resp.status_code == 429 and resp.headers["retry-after"] == "1"
    assert error_of(resp)["code"] == "rate_limit_exceeded"


def test_unknown_routes_and_methods_answer_in_openai_shape(gateway: RunningServer) -> None:
    with gateway.http(gateway.admin_key) as http:
        missing = http.get("/v1/nothing-here")
        wrong = http.get("/v1/chat/completions")
    assert missing.status_code == 404 and error_of(missing)
    assert wrong.status_code == 405 and error_of(wrong)


def test_every_response_has_request_id_and_security_headers(gateway: RunningServer) -> None:
    with gateway.http() as http:
        for resp in (http.get("/health"), http.get("/v1/models"), http.post("/v1/chat/completions", content=b"x")):
            assert resp.headers["x-request-id"]
            assert resp.headers["x-content-type-options"] == "nosniff"
            assert resp.headers["x-frame-options"] == "DENY"
        assert http.get("/health", headers={"x-request-id": "my-trace-1"}).headers["x-request-id"] == "my-trace-1"
        forged = http.get("/health", headers={"x-request-id": "bad id <script>"}).headers["x-request-id"]
        assert forged.startswith("req_")



@pytest.mark.parametrize("field", ["api_base", "base_url", "extra_headers", "api_key", "litellm_params"])
def test_clients_cannot_choose_where_the_gateway_connects(
    gateway: RunningServer, fake_openai: FakeOpenAI, field: str
) -> None:
    before = len(fake_openai.requests)
    body = {"model": "gpt-4o-mini", "messages": HELLO, field: "http://169.254.169.254/"}
    with gateway.http(gateway.admin_key) as http:
        for path, extra in (("/v1/chat/completions", {}), ("/v1/completions", {"prompt": "x"}),
                            ("/v1/embeddings", {"input": "x"})):
            resp = http.post(path, json={**body, **extra})
            assert resp.status_code == 400
            err = error_of(resp)
            assert (err["param"], err["code"]) == (field, "field_not_allowed")
    assert len(fake_openai.requests) == before  # nothing reached the upstream


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"extra_body": {"api_base": "EVIL"}}, "extra_body.api_base"),
        ({"metadata": {"litellm_params": {"api_base": "EVIL"}}}, "metadata.litellm_params"),
        ({"stream_options": {"include_usage": True, "headers": {"Host": "EVIL"}}}, "stream_options.headers"),
        ({"messages": [{"role": "user", "content": "hi", "base_url": "EVIL"}]}, "messages[0].base_url"),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi", "api_key": "EVIL"}]}]},
         "messages[0].content[0].api_key"),
        ({"x": [[{"deep": [{"deeper": {"extra_headers": {"a": "EVIL"}}}]}]]}, "x[0][0].deep[0].deeper.extra_headers"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}, "azure_endpoint": "EVIL"}]},
         "tools[0].azure_endpoint"),
    ],
)
def test_steering_fields_are_refused_at_any_depth(
    gateway: RunningServer, fake_openai: FakeOpenAI, extra: dict[str, object], param: str
) -> None:
    with FakeOpenAI() as evil:
        before = len(fake_openai.requests)
        body = json.loads(json.dumps({"model": "gpt-4o-mini", "messages": HELLO, **extra}).replace("EVIL", evil.url))
        with gateway.http(gateway.admin_key) as http:
            resp = http.post("/v1/chat/completions", json=body)
        assert resp.status_code == 400
        err = error_of(resp)
        assert (err["param"], err["code"]) == (param, "field_not_allowed")
        assert evil.url not in resp.text
        assert len(fake_openai.requests) == before and evil.requests == []


def test_tool_schemas_may_name_their_arguments_anything(gateway: RunningServer, fake_openai: FakeOpenAI) -> None:
    """A tool taking a 'base_url' or 'headers' argument is the client's data, not steering."""
    tool = {"type": "function", "function": {"name": "fetch", "parameters": {
        "type": "object", "properties": {"base_url": {"type": "string"}, "headers": {"type": "object"}}}}}
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    body = {"model": "gpt-4o-mini", "tools": [tool],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}, image]}]}
    with gateway.http(gateway.admin_key) as http:
        resp = http.post("/v1/chat/completions", json=body)
    assert resp.status_code == 200, resp.text
    assert fake_openai.last_request.body["tools"] == [tool]


def test_requests_over_the_cap_wait_in_order_and_all_succeed(gateway: RunningServer) -> None:
    import concurrent.futures

    def one(i: int) -> int:
        with gateway.http(gateway.admin_key) as http:
            return http.post("/v1/chat/completions", json={"model": "orderly", "messages": HELLO}).status_code

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert list(pool.map(one, range(8))) == [200] * 8


def test_a_full_queue_is_429_and_a_missed_deadline_is_503(gateway: RunningServer) -> None:
    import concurrent.futures

    def post() -> httpx.Response:
        with gateway.http(gateway.admin_key) as http:
            return http.post("/v1/chat/completions", json={"model": "queued", "messages": HELLO})

    with gateway.holding_stream("queued"), concurrent.futures.ThreadPoolExecutor(2) as pool:
        waiting = pool.submit(post)  # takes the one queue place, then misses its 0.5 s deadline
        time.sleep(0.2)
        full = post()  # the queue is full: refused at once
        late = waiting.result(timeout=10)
    assert full.status_code == 429 and full.headers["retry-after"] == "1"
    assert late.status_code == 503 and late.headers["retry-after"] == "1"
    assert error_of(late)["code"] == "queue_timeout"
