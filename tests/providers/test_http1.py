"""The upstream HTTP/1.1 client (``providers/_http1.py`` under ``providers/_http.py``), against
loopback servers that write their answers byte by byte: keep-alive, chunked and close-delimited
bodies, streaming and back-pressure, a pooled connection the server closed, timeouts, TLS, and
malformed answers. Every failure must come out as the gateway's own upstream error."""

from __future__ import annotations

import asyncio
import gzip
import os
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from switchyard.errors import UpstreamConnectionError, UpstreamError, UpstreamTimeoutError
from switchyard.protocol.ndjson import LineDecoder
from switchyard.providers._http import UpstreamClient
from tests.deploy.tls import make_tls
from tests.harness import free_port

Handler = Callable[["Upstream", asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


def _never(status: int, raw: bytes, headers: Any) -> UpstreamError:
    return UpstreamError(f"upstream said {status}: {raw.decode()}")


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, dict[str, str], bytes] | None:
    """One request (line, lower-cased headers, body), or None when the client closed."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    line, *fields = head[:-4].split(b"\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (f.decode().split(":", 1) for f in fields)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return line, headers, body


def ok(body: bytes, *extra: str) -> bytes:
    lines = ["HTTP/1.1 200 OK", "Content-Type: application/json", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Upstream:
    """A loopback server running ``handler(upstream, reader, writer, n)`` for its n-th connection."""

    def __init__(self, handler: Handler, ssl_context: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.ssl_context = ssl_context
        self.connections = 0
        self.requests: list[tuple[bytes, dict[str, str], bytes]] = []
        self.events: dict[str, asyncio.Event] = {}

    def event(self, name: str) -> asyncio.Event:
        return self.events.setdefault(name, asyncio.Event())

    async def __aenter__(self) -> Upstream:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl_context)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(self, reader, writer, self.connections)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client hung up
        except asyncio.CancelledError:  # the test ended with this handler still waiting
            pass
        finally:
            writer.close()

    async def next_request(self, reader: asyncio.StreamReader) -> tuple[bytes, dict[str, str], bytes] | None:
        req = await read_request(reader)
        if req is not None:
            self.requests.append(req)
        return req


async def keep_alive_echo(up: Upstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
    while (req := await up.next_request(reader)) is not None:
        writer.write(ok(b'{"conn":%d,"got":%s}' % (n, req[2] or b"null")))
        await writer.drain()


def test_sequential_calls_share_one_kept_alive_connection() -> None:
    async def body() -> None:
        async with Upstream(keep_alive_echo) as up:
            client = UpstreamClient(f"http://127.0.0.1:{up.port}/v1", {"Authorization": "Bearer up-key"}, 5.0)
            answers = [await client.call_json("POST", "/chat/completions", _never, json={"i": i}) for i in range(30)]
            await client.aclose()
        assert [a["got"]["i"] for a in answers] == list(range(30))
        assert up.connections == 1
        line, headers, raw = up.requests[0]
        assert line == b"POST /v1/chat/completions HTTP/1.1"
        assert headers["host"] == f"127.0.0.1:{up.port}"
        assert headers["authorization"] == "Bearer up-key"
        assert headers["content-type"] == "application/json"
        assert raw == b'{"i":0}'
        assert "cookie" not in headers and "accept-encoding" not in headers

    asyncio.run(body())


def test_a_chunked_stream_arrives_piece_by_piece_and_lines_split_across_pieces_join() -> None:
    async def handler(up: Upstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await up.next_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(b'e\r\n{"a":1}\n{"b":2\r\n')
        await writer.drain()
        await up.event("first seen").wait()  # the client has it before the rest is even sent
        writer.write(b'2\r\n}\n\r\n7\r\n{"c":3}\r\n0\r\n\r\n')
        await writer.drain()
        await read_request(reader)

    async def body() -> None:
        async with Upstream(handler) as up:
            client = UpstreamClient(f"http://127.0.0.1:{up.port}", {}, 5.0)
            decoder = LineDecoder()  # as Ollama's stream converter reads NDJSON
            lines = []
            async with client.request("POST", "/api/chat", json={}, stream=True) as resp:
                assert resp.status == 200 and resp.headers["content-type"] == "application/x-ndjson"
                async for data in resp.chunks():
                    lines += decoder.feed(data)
                    up.event("first seen").set()
            await client.aclose()
        assert [*lines, decoder.close()] == [b'{"a":1}\n', b'{"b":2}\n', b'{"c":3}']

    asyncio.run(body())


def test_a_body_delimited_by_the_close_is_read_whole_and_the_connection_not_reused() -> None:
    async def handler(up: Upstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await up.next_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n")
        writer.write(b'{"part":1,')
        await writer.drain()
        writer.write(b'"conn":%d}' % n)

    async def body() -> None:
        async with Upstream(handler) as up:
            client = UpstreamClient(f"http://127.0.0.1:{up.port}", {}, 5.0)
            first = await client.call_json("GET", "/models", _never)
            second = await client.call_json("GET", "/models", _never)
            await client.aclose()
        assert (first, second) == ({"part": 1, "conn": 1}, {"part": 1, "conn": 2})
        assert up.connections == 2

    asyncio.run(body())


def test_a_pooled_connection_the_server_drops_unanswered_is_retried_once_on_a_fresh_one() -> None:
    """The server's idle close races the next request on a reused connection: no byte of an
    answer came back, so the request goes once more on a new connection."""

    async def handler(up: Upstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await up.next_request(reader)
        writer.write(ok(b'{"conn":%d}' % n))
        await writer.drain()
        if n == 1:
            await up.next_request(reader)  # read the second request, then hang up without a word
            return
        await keep_alive_echo(up, reader, writer, n)

    async def body() -> None:
        async with Upstream(handler) as up:
            client = UpstreamClient(f"http://127.0.0.1:{up.port}", {}, 5.0)
            assert await client.call_json("POST", "/chat/completions", _never, json={}) == {"conn": 1}
            assert await client.call_json("POST", "/chat/completions", _never, json={}) == {"conn": 2}
            await client.aclose()
        assert up.connections == 2
        assert len(up.requests) == 3  # the dropped one was sent twice

    asyncio.run(body())


def test_bytes_arriving_on_an_idle_connection_retire_it() -> None:
    """What an upstream sends when no request waits cannot belong to the next answer."""

    async def handler(up: Upstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await up.next_request(reader)
        writer.write(ok(b'{"conn":%d}' % n))
        await writer.drain()
        if n == 1:
            await asyncio.sleep(0.05)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Le")  # the start of an answer to nothing
            await writer.drain()
        await keep_alive_echo(up, reader, writer, n)

    async def body() -> None:
        async with Upstream(handler) as up:
            client = UpstreamClient(f"http://127.0.0.1:{up.port}", {}, 5.0)
            assert await client.call_json("GET", "/models", _never) == {"conn": 1}
            await asyncio.sleep(0.2)
            assert (await client.call_json("POST", "/chat/completions", _never, json={"x": 1}))["conn"] == 2
            await client.aclose()
        assert up.connections == 2 and len(up.requests) == 2

    asyncio.run(body())


def test_a_fresh_connection_dropped_unanswered_or_mid_answer_is_an_upstream_error_not_a_retry() -> None:
    async def handler(up: Upstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await up.next_request(reader)
        if n == 2:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"half\":")
            await writer.drain()

    async def body() -> None:
        async with Upstream(handler) as up:
            client = UpstreamClient(f"http://127.0.0.1:{up.port}", {}, 5.0)
            for _ in range(2):
                with pytest.raises(UpstreamError, match="closed the connection early"):
                    await client.call("POST", "/chat/completions", _never, json={})
            await client.aclose()
        assert up.connections == 2 and len(up.requests) == 2

    asyncio.run(body())


def test_timeouts_a_silent_upstream_and_a_stalled_stream() -> None:
    async def handler(up: Upstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await up.next_request(reader)
        if n == 2:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"8\r\ndata:1\n\n\r\n")  # one whole event: nothing of it is held back for redaction
            await writer.drain()
        await reader.read()  # say nothing more until the client gives up

    async def body() -> None:
        async with Upstream(handler) as up:
            client = UpstreamClient(f"http://127.0.0.1:{up.port}", {}, 0.3)
            started = time.monotonic()
            with pytest.raises(UpstreamTimeoutError):
                await client.call("POST", "/chat/completions", _never, json={})
            assert 0.25 < time.monotonic() - started < 3
            got = []
            with pytest.raises(UpstreamTimeoutError):
                async with client.request("POST", "/chat/completions", json={}, stream=True) as resp:
                    async for data in resp.chunks():
                        got.append(data)
            assert got == [b"data:1\n\n"]
            await client.aclose()
            await asyncio.sleep(0.05)
        assert up.connections == 2  # the timed-out connection was not reused

    asyncio.run(body())


def test_an_early_exit_closes_the_connection_and_the_next_call_opens_another() -> None:
    async def handler(up: Upstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await up.next_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        try:
            for i in range(1000):
                writer.write(b"8\r\ndata:%03d\r\n" % i)
                await writer.drain()
                await asyncio.sleep(0.001)
                if reader.at_eof():
                    break
            else:
                writer.write(b"0\r\n\r\n")
                return
        except ConnectionError:
            pass
        up.event("client gone").set()

    async def body() -> None:
        async with Upstream(handler) as up:
            client = UpstreamClient(f"http://127.0.0.1:{up.port}", {}, 5.0)
            for _ in range(2):
                async with client.request("POST", "/chat/completions", json={}, stream=True) as resp:
                    async for _data in resp.chunks():
                        break
            await asyncio.wait_for(up.event("client gone").wait(), 5)
            await client.aclose()
        assert up.connections == 2

    asyncio.run(body())


def test_an_unread_stream_stops_the_socket_instead_of_filling_memory() -> None:
    size = 48 << 20
    left: list[int] = []

    async def handler(up: Upstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await up.next_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + b"x" * size)
        await asyncio.sleep(0.5)
        left.append(writer.transport.get_write_buffer_size())
        await writer.drain()
        await read_request(reader)

    async def body() -> None:
        async with Upstream(handler) as up:
            client = UpstreamClient(f"http://127.0.0.1:{up.port}", {}, 5.0)
            async with client.request("GET", "/big", stream=True) as resp:
                await asyncio.sleep(1.0)  # the client reads nothing for a while
                total = 0
                async for data in resp.chunks():
                    total += len(data)
            await client.aclose()
        assert total == size
        assert left[0] > 32 << 20  # the unread bytes stayed with the sender, not in the client

    asyncio.run(body())


def test_an_interim_103_answer_is_skipped_and_repeated_headers_are_joined() -> None:
    async def handler(up: Upstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await up.next_request(reader)
        writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n")
        writer.write(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nX-Trace: a\r\nx-trace: b\r\n"
                     b"Content-Length: 2\r\n\r\n{}")
        await writer.drain()
        await read_request(reader)

    async def body() -> None:
        async with Upstream(handler) as up:
            client = UpstreamClient(f"http://127.0.0.1:{up.port}", {}, 5.0)
            async with client.request("POST", "/chat/completions", json={}) as resp:
                assert resp.status == 429
                assert resp.headers["retry-after"] == "7" and resp.headers.get("RETRY-AFTER") == "7"
                assert resp.headers["X-Trace"] == "a, b" and "link" not in resp.headers
                assert await resp.read() == b"{}"
            await client.aclose()

    asyncio.run(body())


def test_a_body_compressed_though_nobody_asked_is_decompressed_whole_and_streamed() -> None:
    events = b"".join(b'data: {"i":%d,"t":"%s"}\n\n' % (i, os.urandom(20).hex().encode()) for i in range(200))
    packed = gzip.compress(events)

    async def handler(up: Upstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while await up.next_request(reader) is not None:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n")
            for at in range(0, len(packed), 1000):
                piece = packed[at:at + 1000]
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await writer.drain()
                await asyncio.sleep(0.002)
            writer.write(b"0\r\n\r\n")

    async def body() -> None:
        async with Upstream(handler) as up:
            client = UpstreamClient(f"http://127.0.0.1:{up.port}", {}, 5.0)
            whole = await client.call("POST", "/chat/completions", _never, json={})
            async with client.request("POST", "/chat/completions", json={}, stream=True) as resp:
                streamed = [data async for data in resp.chunks()]
            await client.aclose()
        assert whole == events
        assert b"".join(streamed) == events and len(streamed) > 1

    asyncio.run(body())


@pytest.mark.parametrize("garbage", [
    b"SMTP ready\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 4\r\n\r\nnope",
    b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 4\r\n\r\nnope",
])
def test_a_malformed_answer_is_a_502_upstream_error(garbage: bytes) -> None:
    async def handler(up: Upstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await up.next_request(reader)
        writer.write(garbage)
        await writer.drain()
        await reader.read()

    async def body() -> None:
        async with Upstream(handler) as up:
            client = UpstreamClient(f"http://127.0.0.1:{up.port}", {}, 5.0)
            with pytest.raises(UpstreamError, match=r"malformed HTTP response|compressed body|encoding") as caught:
                await client.call("GET", "/models", _never)
            assert caught.value.status_code == 502
            await client.aclose()

    asyncio.run(body())


def test_a_refused_connection_is_a_connection_error() -> None:
    async def body() -> None:
        client = UpstreamClient(f"http://127.0.0.1:{free_port()}", {}, 5.0)
        with pytest.raises(UpstreamConnectionError, match="Could not connect"):
            await client.call("GET", "/models", _never)
        await client.aclose()

    asyncio.run(body())


def test_a_credential_with_a_line_break_is_never_sent_and_a_path_cannot_inject_a_header() -> None:
    async def body() -> None:
        async with Upstream(keep_alive_echo) as up:
            bad = UpstreamClient(f"http://127.0.0.1:{up.port}", {"x-api-key": "sk-a\r\nX-Evil: 1"}, 5.0)
            with pytest.raises(UpstreamError, match="line break") as caught:
                await bad.call("GET", "/models", _never)
            assert "sk-a" not in str(caught.value)
            assert up.connections == 0
            good = UpstreamClient(f"http://127.0.0.1:{up.port}/v1beta", {}, 5.0)
            await good.call("POST", "/models/a b\r\nX-Evil: 1:generate?alt=sse", _never, json={})
            await good.aclose()
        line, headers, _ = up.requests[0]
        assert line == b"POST /v1beta/models/a%20b%0D%0AX-Evil:%201:generate?alt=sse HTTP/1.1"
        assert "x-evil" not in headers

    asyncio.run(body())


def test_tls_is_verified_against_the_trusted_authorities(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tls = make_tls(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(tls.cert, tls.key)

    async def body() -> None:
        async with Upstream(keep_alive_echo, server_ctx) as up:
            untrusted = UpstreamClient(f"https://localhost:{up.port}", {}, 5.0)
            with pytest.raises(UpstreamConnectionError):
                await untrusted.call("GET", "/models", _never)
            monkeypatch.setenv("SSL_CERT_FILE", str(tls.ca))  # what the system trusts, for this client
            trusted = UpstreamClient(f"https://localhost:{up.port}", {}, 5.0)
            first = await trusted.call_json("POST", "/v1/x", _never, json={"n": 1})
            second = await trusted.call_json("POST", "/v1/x", _never, json={"n": 2})
            await trusted.aclose()
            await untrusted.aclose()
        # one connection: the refused handshake never reached the server's handler
        assert first == {"conn": 1, "got": {"n": 1}} and second == {"conn": 1, "got": {"n": 2}}
        assert up.requests[0][1]["host"] == f"localhost:{up.port}"

    asyncio.run(body())


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_connection_whose_transport_closed_before_the_loop_said_so_is_an_upstream_error_never_a_crash(
        loop: str) -> None:
    """A connection can be lost between the moment it is taken and the moment the request is
    written: a pooled one whose transport the loop is closing, a fresh one the server reset right
    after the handshake. Nothing may be written to it: uvloop raises RuntimeError on a closed
    transport, which was a 500 (found by bench/chaos.py). A pooled one is retried on a fresh
    connection; a fresh one is the upstream's error, a 502."""

    async def body() -> None:
        async with Upstream(keep_alive_echo) as up:
            client = UpstreamClient(f"http://127.0.0.1:{up.port}", {}, 5.0)
            origin = client._origin
            assert (await client.call_json("POST", "/chat/completions", _never, json={}))["conn"] == 1
            (pooled,) = origin._idle
            pooled.transport.close()  # what the loop does on the server's FIN; connection_lost is still queued
            assert (await client.call_json("POST", "/chat/completions", _never, json={}))["conn"] == 2

            connect = origin._connect

            async def connect_then_lose(*args: Any) -> Any:
                conn = await connect(*args)
                conn.transport.close()  # the server's RST came right after the handshake,
                for _ in range(2):  # and the loop told the connection before the request was sent
                    await asyncio.sleep(0)
                assert conn.closed
                return conn

            origin._connect = connect_then_lose  # type: ignore[method-assign]
            origin.close()  # nothing pooled: the next request connects
            with pytest.raises(UpstreamError, match="closed the connection early"):
                await client.call("POST", "/chat/completions", _never, json={})
            await client.aclose()

    if loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(body())
    else:
        asyncio.run(body())
