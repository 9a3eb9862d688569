"""The edge, as pure ASGI (safe for streams): request id, security headers, the
``x-switchyard-overhead-ms`` header and metric, and the access log."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Awaitable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from switchyard.observability.logging import AccessLog

__all__ = ["EdgeMiddleware"]

_SAFE_ID = re.compile(rb"^[A-Za-z0-9._\-]{1,128}$")
_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]


class EdgeMiddleware:
    def __init__(self, app: ASGIApp, access_log: AccessLog | None = None) -> None:
        self.app = app
        self.access_log = access_log or AccessLog(json=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = next((v for k, v in scope["headers"] if k == b"x-request-id"), None)
        # 32 random hex digits, as uuid4().hex has, for a fraction of its cost (on every request)
        rid = incoming.decode() if incoming and _SAFE_ID.match(incoming) else "req_" + os.urandom(16).hex()
        state = scope.setdefault("state", {})
        state["request_id"] = rid
        started = time.perf_counter()
        status = 500
        header = rid.encode()

        def send_with_headers(message: Message) -> Awaitable[None]:  # the server's send: no coroutine around it
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                call = state.get("call")
                overhead = time.perf_counter() - started - (call.upstream_s if call is not None else 0.0)
                message["headers"] = [
                    *message.get("headers", ()),
                    (b"x-request-id", header),
                    (b"x-switchyard-overhead-ms", f"{max(overhead, 0.0) * 1000:.3f}".encode()),
                    *_SECURITY_HEADERS,
                ]
                if call is not None and call.headers:
                    message["headers"].extend((k.encode(), v.encode()) for k, v in call.headers.items())
                if call is not None and call.attempts:
                    message["headers"].append((b"x-switchyard-deployment", (call.deployment or "").encode()))
                    message["headers"].append((b"x-switchyard-attempts", str(call.attempts).encode()))
                if call is not None:
                    app_state = getattr(scope.get("app"), "state", None)
                    services = getattr(app_state, "services", None)
                    if services is not None:
                        services.metrics.overhead.observe(max(overhead, 0.0))
            return send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            if state.get("client_left") and status == 500:
                status = 499  # the client left before an answer was sent
            if self.access_log.enabled():
                self.access_log.write({
                    "request_id": rid,
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                    "key_id": state.get("key_id"),
                    "client": scope["client"][0] if scope.get("client") else None,
                })
