"""The floor: the cheapest gateway that Switchyard's stack can make, for ``bench/run.py``.

A bare ASGI app on the same server and client Switchyard runs on (uvicorn with httptools and
uvloop, and the keep-alive pool of ``switchyard/providers/_http1.py``). It checks
that a Bearer key is present, forwards the body to the upstream and relays the answer (a stream
chunk by chunk), and does nothing else: no routing, validation, key lookup, limits, budgets,
usage or logs. What it adds over direct is what any gateway on this stack pays before it does
any work; Switchyard's added latency minus the floor's is what Switchyard's own work costs.

  FLOOR_UPSTREAM=http://127.0.0.1:9100 python -m uvicorn --app-dir bench floor_app:app --port 9200 \\
      --loop uvloop --http httptools --no-access-log

Routes: ``GET /health`` (200, no key), ``POST /v1/chat/completions`` (401 without a Bearer key).
"""

from __future__ import annotations

import os
import time
from typing import Any

import orjson

from switchyard.providers._http1 import Origin

Scope = dict[str, Any]

_JSON = [(b"content-type", b"application/json")]


class Floor:
    def __init__(self) -> None:
        self.origin: Origin | None = None
        self.base = os.environ.get("FLOOR_UPSTREAM", "http://127.0.0.1:9100").rstrip("/") + "/v1"

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
        elif scope["type"] == "http":
            await self.http(scope, receive, send)

    async def lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.origin = Origin(self.base, {})
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.origin is not None:
                    self.origin.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def http(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["path"] == "/health":
            await _reply(send, 200, b'{"status":"ok"}')
            return
        auth = dict(scope["headers"]).get(b"authorization", b"")
        if not auth.lower().startswith(b"bearer ") or len(auth) <= 7:
            await _reply(send, 401, b'{"error":{"message":"no key","type":"invalid_request_error"}}')
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        assert self.origin is not None
        stream = bool(orjson.loads(body).get("stream"))
        deadline = None if stream else time.monotonic() + 600
        async with self.origin.request("POST", "/chat/completions", body, "application/json",
                                       deadline=deadline, read_timeout=600 if stream else None) as resp:
            if not stream:
                await _reply(send, resp.status, await resp.read())
                return
            await send({"type": "http.response.start", "status": resp.status,
                        "headers": [(b"content-type", b"text/event-stream")]})
            async for chunk in resp.chunks():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})


async def _reply(send: Any, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*_JSON, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


app = Floor()
