"""The OpenAI pass-through translation: pure functions, tested as tables."""

from __future__ import annotations

import json

import pytest

from switchyard.core.chat import ChatRequest, GenerationKind
from switchyard.core.models import Target
from switchyard.errors import (
    BadRequestError,
    NotFoundError,
    ServiceUnavailableError,
    UpstreamError,
    UpstreamRateLimitError,
    UpstreamTimeoutError,
)
from switchyard.providers.openai.translate import StreamConverter, chat_body, error_from_response

TARGET = Target(alias="alias", provider="p", provider_type="openai", upstream_model="upstream", timeout=5)


def event(obj: object) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


CHUNK = event({"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "hi"}}]})
USAGE = event({"id": "c", "object": "chat.completion.chunk", "choices": [],
               "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}})
DONE = b"data: [DONE]\n\n"


def test_chat_body_swaps_model_asks_for_usage_and_drops_gateway_fields() -> None:
    req = ChatRequest(kind=GenerationKind.CHAT, model="alias", stream=True, keep_alive="5m",
                      body={"model": "alias", "messages": [], "stream": True, "keep_alive": "5m", "top_k": 3,
                            "stream_options": {"include_usage": False}})
    body = chat_body(req, TARGET)
    assert body["model"] == "upstream" and body["top_k"] == 3 and "keep_alive" not in body
    assert body["stream_options"] == {"include_usage": True}
    assert req.body["stream_options"] == {"include_usage": False}  # the client's body is not mutated


@pytest.mark.parametrize("split", [1, 7, 50, len(CHUNK) + 3])
def test_relay_reassembles_events_split_across_reads(split: int) -> None:
    stream = CHUNK + CHUNK + USAGE + DONE
    relay = StreamConverter(client_wants_usage=True)
    out = b""
    events = 0
    for i in range(0, len(stream), split):
        piece = relay.feed(stream[i : i + split])
        if piece is not None:
            out += piece.data
            events += piece.events
    relay.finish()
    assert out == stream and events == 3
    assert relay.usage is not None and (relay.usage.prompt_tokens, relay.usage.completion_tokens) == (4, 2)


def test_relay_drops_the_usage_chunk_the_client_did_not_ask_for() -> None:
    relay = StreamConverter(client_wants_usage=False)
    piece = relay.feed(CHUNK + USAGE + DONE)
    assert piece is not None and piece.data == CHUNK + DONE and piece.usage is not None and piece.done


def test_relay_nulls_usage_riding_on_content_chunks_when_not_asked() -> None:
    both = event({"id": "c", "choices": [{"index": 0, "delta": {"content": "x"}}],
                  "usage": {"prompt_tokens": 1, "completion_tokens": 1}})
    piece = StreamConverter(client_wants_usage=False).feed(both)
    assert piece is not None and json.loads(piece.data[6:])["usage"] is None and piece.usage is not None


def test_relay_accepts_crlf_and_flags_streams_that_end_early() -> None:
    relay = StreamConverter(client_wants_usage=True)
    piece = relay.feed(CHUNK.replace(b"\n", b"\r\n"))
    assert piece is not None and piece.data == CHUNK
    with pytest.raises(UpstreamError):
        relay.finish()


@pytest.mark.parametrize("line_end", [b"\r\n", b"\r"])
def test_relay_makes_every_line_end_lf_however_the_reads_cut_them(line_end: bytes) -> None:
    stream = CHUNK + CHUNK + USAGE + DONE
    upstream = stream.replace(b"\n", line_end)
    for cut in range(1, len(upstream)):
        relay = StreamConverter(client_wants_usage=True)
        pieces = [relay.feed(upstream[:cut]), relay.feed(upstream[cut:])]
        relay.finish()
        assert b"".join(p.data for p in pieces if p is not None) == stream
        assert sum(p.events for p in pieces if p is not None) == 3 and relay.usage is not None


def test_relay_turns_an_upstream_error_event_into_an_error() -> None:
    relay = StreamConverter(client_wants_usage=False)
    with pytest.raises(UpstreamError, match="boom"):
        relay.feed(CHUNK + event({"error": {"message": "boom", "type": "server_error"}}))


@pytest.mark.parametrize(
    ("status", "headers", "expected", "code_status"),
    [
        (429, {"Retry-After": "12"}, UpstreamRateLimitError, 429),
        (400, {}, BadRequestError, 400),
        (404, {}, NotFoundError, 404),
        (401, {}, UpstreamError, 502),
        (403, {}, UpstreamError, 502),
        (500, {}, UpstreamError, 502),
        (502, {}, UpstreamError, 502),
        (503, {"Retry-After": "2"}, ServiceUnavailableError, 503),
        (504, {}, UpstreamTimeoutError, 504),
    ],
)
def test_status_mapping(status: int, headers: dict[str, str], expected: type[Exception], code_status: int) -> None:
    body = json.dumps({"error": {"message": "the value is bad", "param": "temperature"}}).encode()
    err = error_from_response(status, body, headers)
    assert type(err) is expected and err.status_code == code_status
    if "Retry-After" in headers:
        assert err.retry_after == float(headers["Retry-After"])


def test_non_json_error_bodies_still_map() -> None:
    err = error_from_response(502, b"<html>bad gateway</html>", {})
    assert err.status_code == 502 and "502" in err.message
