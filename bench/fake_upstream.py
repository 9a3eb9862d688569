"""A fast fake OpenAI-compatible upstream for benchmarks.

Raw asyncio ``Protocol`` on uvloop with httptools request parsing and HTTP/1.1
keep-alive, so the upstream is never the bottleneck when a gateway is measured.

Routes:
  POST /v1/chat/completions   non-stream: a chat.completion with usage;
                              ``stream: true``: SSE chat.completion.chunk events,
                              one content chunk per ``max_tokens`` (default 20;
                              chunk i carries the text "t<i> "),
                              then a usage chunk (``choices: []``) when
                              ``stream_options.include_usage`` is true, then
                              ``data: [DONE]``; chunked transfer encoding.
  GET  /v1/models             the model list (one model, ``bench-model``).
  GET  /health                ``{"status":"ok"}``.

Each SSE event is written with its own ``write()`` and the stream yields to the
event loop between events, so a gateway sees a stream of separate chunks rather
than one blob. ``--chunk-delay-ms`` adds a real pause between events.

Usage: python bench/fake_upstream.py --port 9100
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import signal
import time
from typing import Any, cast

import httptools

try:
    import orjson

    def _dumps(obj: Any) -> bytes:
        return orjson.dumps(obj)

    def _loads(data: bytes) -> Any:
        return orjson.loads(data)

except ImportError:  # pragma: no cover - orjson is in the project venv

    def _dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()

    def _loads(data: bytes) -> Any:
        return json.loads(data)


DEFAULT_MODEL = "bench-model"
DEFAULT_MAX_TOKENS = 20
PROMPT_TOKENS = 9
TOKEN_TEXT = "tok "
_TOKEN_SLOT = "@@TOKEN@@"

_ids = itertools.count(1)

_STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"content-type: text/event-stream\r\n"
    b"cache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n"
    b"\r\n"
)
_DONE_EVENT = b"data: [DONE]\n\n"
_CHUNKED_END = b"0\r\n\r\n"

_MODELS_BODY = _dumps(
    {
        "object": "list",
        "data": [{"id": DEFAULT_MODEL, "object": "model", "created": 1700000000, "owned_by": "bench"}],
    }
)
_HEALTH_BODY = b'{"status":"ok"}'


def _response(status: bytes, body: bytes, keep_alive: bool) -> bytes:
    conn = b"keep-alive" if keep_alive else b"close"
    return b"".join(
        (
            b"HTTP/1.1 ",
            status,
            b"\r\ncontent-type: application/json\r\ncontent-length: ",
            str(len(body)).encode(),
            b"\r\nconnection: ",
            conn,
            b"\r\n\r\n",
            body,
        )
    )


def _error_body(message: str, code: str) -> bytes:
    return _dumps({"error": {"message": message, "type": "invalid_request_error", "code": code}})


def _chunk(event: bytes) -> bytes:
    """Frame one SSE event as one HTTP/1.1 chunk."""
    return b"%x\r\n%b\r\n" % (len(event), event)


def _sse(obj: Any) -> bytes:
    return b"data: " + _dumps(obj) + b"\n\n"


class UpstreamProtocol(asyncio.Protocol):
    __slots__ = (
        "_body",
        "_busy",
        "_chunk_delay",
        "_drain",
        "_parser",
        "_pending",
        "_task",
        "_transport",
        "_url",
    )

    def __init__(self, chunk_delay: float) -> None:
        self._chunk_delay = chunk_delay
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._body: list[bytes] = []
        # Requests parsed while a stream is still being written (pipelining).
        self._pending: list[tuple[bytes, bytes, bytes, bool]] = []
        self._busy = False
        self._drain: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None

    # -- asyncio.Protocol -------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports don't subclass asyncio.Transport; cast, don't check.
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def pause_writing(self) -> None:
        if self._drain is None or self._drain.done():
            self._drain = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            if self._transport is not None:
                self._transport.write(_response(b"400 Bad Request", _error_body("bad request", "400"), False))
                self._transport.close()

    # -- httptools callbacks ---------------------------------------------
    def on_message_begin(self) -> None:
        self._url = b""
        self._body = []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        method: bytes = self._parser.get_method()
        keep_alive: bool = self._parser.should_keep_alive()
        request = (method, self._url, b"".join(self._body), keep_alive)
        if self._busy:
            self._pending.append(request)
        else:
            self._handle(*request)

    # -- request handling -------------------------------------------------
    def _handle(self, method: bytes, url: bytes, body: bytes, keep_alive: bool) -> None:
        transport = self._transport
        if transport is None:
            return
        path = url.split(b"?", 1)[0]
        if path in (b"/v1/chat/completions", b"/chat/completions"):
            if method != b"POST":
                out = _response(b"405 Method Not Allowed", _error_body("method not allowed", "405"), keep_alive)
            else:
                self._chat(body, keep_alive)
                return
        elif path in (b"/health", b"/healthz") and method == b"GET":
            out = _response(b"200 OK", _HEALTH_BODY, keep_alive)
        elif path in (b"/v1/models", b"/models") and method == b"GET":
            out = _response(b"200 OK", _MODELS_BODY, keep_alive)
        else:
            out = _response(b"404 Not Found", _error_body("not found", "404"), keep_alive)
        transport.write(out)
        if not keep_alive:
            transport.close()

    def _chat(self, body: bytes, keep_alive: bool) -> None:
        transport = self._transport
        assert transport is not None
        try:
            req = _loads(body)
            if not isinstance(req, dict):
                raise ValueError("body is not an object")
            model = str(req.get("model") or DEFAULT_MODEL)
            n = int(req.get("max_tokens") or req.get("max_completion_tokens") or DEFAULT_MAX_TOKENS)
            n = max(1, min(n, 100_000))
            stream = bool(req.get("stream"))
            opts = req.get("stream_options") or {}
            include_usage = bool(opts.get("include_usage")) if isinstance(opts, dict) else False
        except (ValueError, TypeError):
            transport.write(_response(b"400 Bad Request", _error_body("invalid JSON body", "400"), keep_alive))
            if not keep_alive:
                transport.close()
            return
        rid = f"chatcmpl-bench{next(_ids)}"
        created = int(time.time())
        if not stream:
            out = _dumps(
                {
                    "id": rid,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": TOKEN_TEXT * n},
                            "logprobs": None,
                            "finish_reason": "length",
                        }
                    ],
                    "usage": {
                        "prompt_tokens": PROMPT_TOKENS,
                        "completion_tokens": n,
                        "total_tokens": PROMPT_TOKENS + n,
                    },
                }
            )
            transport.write(_response(b"200 OK", out, keep_alive))
            if not keep_alive:
                transport.close()
            return
        self._busy = True
        # Keep a reference so the task is not garbage-collected mid-stream.
        self._task = asyncio.get_running_loop().create_task(
            self._stream(rid, created, model, n, include_usage, keep_alive)
        )

    async def _stream(self, rid: str, created: int, model: str, n: int, include_usage: bool, keep_alive: bool) -> None:
        def template(delta: dict[str, Any], finish: str | None) -> tuple[bytes, bytes]:
            """An SSE event split around the token number, so each chunk's text differs
            (LiteLLM rejects a stream that repeats the same chunk 100 times)."""
            ev = _sse(
                {
                    "id": rid,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
                }
            )
            head, tail = ev.split(_TOKEN_SLOT.encode(), 1)
            return head, tail

        tok = f"t{_TOKEN_SLOT} "
        first = template({"role": "assistant", "content": tok}, None if n > 1 else "length")
        middle = template({"content": tok}, None)
        last = template({"content": tok}, "length")
        delay = self._chunk_delay
        try:
            transport = self._transport
            if transport is None:
                return
            transport.write(_STREAM_HEAD)
            for i in range(n):
                transport = self._transport
                if transport is None or transport.is_closing():
                    return
                pre, post = first if i == 0 else last if i == n - 1 else middle
                transport.write(_chunk(pre + str(i).encode() + post))
                if self._drain is not None and not self._drain.done():
                    await self._drain
                await asyncio.sleep(delay)
            transport = self._transport
            if transport is None or transport.is_closing():
                return
            end: list[bytes] = []
            if include_usage:
                end.append(
                    _chunk(
                        _sse(
                            {
                                "id": rid,
                                "object": "chat.completion.chunk",
                                "created": created,
                                "model": model,
                                "choices": [],
                                "usage": {
                                    "prompt_tokens": PROMPT_TOKENS,
                                    "completion_tokens": n,
                                    "total_tokens": PROMPT_TOKENS + n,
                                },
                            }
                        )
                    )
                )
            end.append(_chunk(_DONE_EVENT))
            end.append(_CHUNKED_END)
            transport.write(b"".join(end))
            if not keep_alive:
                transport.close()
                return
        finally:
            self._busy = False
        while self._pending and not self._busy:
            self._handle(*self._pending.pop(0))


async def serve(host: str, port: int, chunk_delay: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: UpstreamProtocol(chunk_delay), host, port, reuse_address=True, backlog=2048
    )
    stop: asyncio.Future[None] = loop.create_future()

    def _stop() -> None:
        if not stop.done():
            stop.set_result(None)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, _stop)
    print(f"fake upstream listening on http://{host}:{port}", flush=True)
    async with server:
        await stop


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9100)
    ap.add_argument(
        "--chunk-delay-ms",
        type=float,
        default=0.0,
        help="pause between SSE events (default 0: only yield to the event loop)",
    )
    args = ap.parse_args(argv)
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(serve(args.host, args.port, args.chunk_delay_ms / 1000.0))


def _loop_factory() -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return None
    return uvloop.new_event_loop


if __name__ == "__main__":
    main()
