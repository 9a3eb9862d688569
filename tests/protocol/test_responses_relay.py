"""``StreamRelay``: the chat SSE bytes the gateway relays -> the Responses stream, framed. Its short
way for plain text deltas gives the very bytes the general way (``feed`` then ``sse``) gives,
whatever the reads' boundaries and the events' shapes."""

from __future__ import annotations

import json
import re
from typing import Any

import orjson
import pytest

from switchyard.protocol.responses import ResponseStream, StreamRelay, sse, to_chat
from tests.protocol.responses_schema import strict_event

HEAD = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "up"}
USAGE = {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
IDS = re.compile(rb"(msg|rs|fc|ctc|call)_[0-9a-f]{32}")


def chunk(delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
    return {**HEAD, "choices": choices, "usage": None, **extra}


CHUNKS = [
    chunk({"role": "assistant", "content": ""}),
    chunk({"reasoning_content": "think "}), chunk({"reasoning_content": "more"}),
    chunk({"content": "Hel"}), chunk({"content": "lo \"q\" \\ \u00e9\n"}), chunk({"content": "!", "refusal": None}),
    chunk({"refusal": "no"}), chunk({"content": "back"}),
    chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                           "function": {"name": "f", "arguments": ""}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}),
    chunk({"content": "after"}), chunk({}, "stop"), chunk(None, usage=USAGE),
]


def wire(chunks: list[dict[str, Any]]) -> bytes:
    """As the gateway relays them: ``data:`` events, a comment and a two-line event among them."""
    out = b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks)
    return b": keep-alive\n\n" + out.replace(b"data: ", b"event: x\r\ndata: ", 1) + b"data: [DONE]\n\n"


def general(chunks: list[dict[str, Any]]) -> bytes:
    stream = ResponseStream(to_chat({"model": "m", "input": "hi", "stream": True}), response_id="resp_1",
                            created_at=1)
    return b"".join(sse(e) for c in chunks for e in stream.feed(c)) + b"".join(sse(e) for e in stream.finish())


@pytest.mark.parametrize("size", [1, 7, 64, 100_000])
def test_the_relay_gives_the_general_ways_bytes(size: int) -> None:
    stream = ResponseStream(to_chat({"model": "m", "input": "hi", "stream": True}), response_id="resp_1",
                            created_at=1)
    relay = StreamRelay(stream)
    raw = wire(CHUNKS)
    out = b"".join(relay.feed(raw[i:i + size]) for i in range(0, len(raw), size))
    out += b"".join(sse(e) for e in stream.finish())
    expected = general(CHUNKS)
    assert IDS.sub(b"ID", re.sub(rb'"completed_at":\d+', b"", out)) == \
        IDS.sub(b"ID", re.sub(rb'"completed_at":\d+', b"", expected))
    events = [json.loads(f.split(b"\ndata: ", 1)[1]) for f in out.split(b"\n\n") if f]
    for event in events:
        strict_event(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert deltas == "Hello \"q\" \\ \u00e9\n!backafter"


def test_text_escaped_otherwise_upstream_reads_the_same() -> None:
    """An upstream that escapes differently (``\\u00e9``, ``\\/``): the text is relayed as it was
    written, and reads as the general way's."""
    pieces = ['caf\\u00e9 ', 'a\\/b ', 'tab\\there ', 'quote \\"x\\" ', '\\ud83d\\ude00']
    raw = b"".join(b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,'
                   b'"delta":{"content":"' + p.encode() + b'"},"logprobs":null,"finish_reason":null}]}\n\n'
                   for p in pieces)
    opening = b"data: " + orjson.dumps(chunk({"role": "assistant", "content": ""})) + b"\n\n"
    closing = b"data: " + orjson.dumps(chunk({}, "stop")) + b"\n\n"
    stream = ResponseStream(to_chat({"model": "m", "input": "hi", "stream": True}))
    relay = StreamRelay(stream)
    out = relay.feed(opening) + relay.feed(raw) + relay.feed(closing) + b"".join(sse(e) for e in stream.finish())
    events = [json.loads(f.split(b"\ndata: ", 1)[1]) for f in out.split(b"\n\n") if f]
    for event in events:
        strict_event(event)
    texts = [json.loads(f'"{p}"') for p in pieces]
    assert [e["delta"] for e in events if e["type"] == "response.output_text.delta"] == texts
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "".join(texts)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))


def test_a_bad_escape_loses_only_its_own_piece() -> None:
    stream = ResponseStream(to_chat({"model": "m", "input": "hi", "stream": True}))
    relay = StreamRelay(stream)
    relay.feed(b"data: " + orjson.dumps(chunk({"role": "assistant", "content": "a"})) + b"\n\n")
    head = b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"'
    tail = b'"},"logprobs":null,"finish_reason":null}]}\n\n'
    relay.feed(head + b"b" + tail + head + b"\\q" + tail + head + b"c" + tail)
    done = stream.finish()
    assert done[-1]["response"]["output"][0]["content"][0]["text"] == "abc"


@pytest.mark.timeout(20)
def test_a_long_text_in_a_chunk_of_another_shape_is_read_in_one_pass() -> None:
    """A chunk whose long text is followed by a field the short way does not know (OpenAI's
    ``obfuscation``): read the long way, and in one pass (a backtracking pattern would take
    longer than the universe has)."""
    stream = ResponseStream(to_chat({"model": "m", "input": "hi", "stream": True}))
    relay = StreamRelay(stream)
    relay.feed(b"data: " + orjson.dumps(chunk({"role": "assistant", "content": "a"})) + b"\n\n")
    text = "ab" * 20_000
    odd = {**chunk({"content": text}), "obfuscation": "xyz"}
    out = relay.feed(b"data: " + orjson.dumps(odd) + b"\n\ndata: " + orjson.dumps({**odd, "choices": [
        {"index": 0, "delta": {"content": "x" * 30 + "\\"}, "logprobs": None, "finish_reason": None}]}) + b"\n\n")
    deltas = [json.loads(f.split(b"\ndata: ", 1)[1])["delta"] for f in out.split(b"\n\n") if f]
    assert deltas == [text, "x" * 30 + "\\"]
