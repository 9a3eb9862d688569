"""A fake upstream that echoes the credential it was sent, in the wire format of each provider kind.

It answers OpenAI (``/v1/chat/completions``), Azure OpenAI (``/openai/deployments/D/chat/completions``),
Anthropic (``/v1/messages``), Gemini (``/v1beta/models/M:generateContent`` and
``:streamGenerateContent``) and Ollama (``/api/chat``). What it does depends on the model named
(in the body, or in the path for Azure and Gemini):

``json-error``    a 500 with the provider's JSON error body, quoting the credential header it got
``stream-error``  a stream (one content chunk first), then the provider's in-stream error event quoting it
``text-500``      a plain-text 500 quoting it
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from ._server import FakeServer

__all__ = ["EchoingUpstream"]

_CREDENTIAL_HEADERS = ("authorization", "x-api-key", "api-key", "x-goog-api-key")


class EchoingUpstream(FakeServer):
    def _routes(self, app: web.Application) -> None:
        app.router.add_route("POST", "/{tail:.*}", self._answer)

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        credential = next((request.headers[h] for h in _CREDENTIAL_HEADERS if h in request.headers), "none")
        said = f"The key you sent, '{credential}', was echoed back by a careless server."
        raw = (await request.read()).decode()
        kind = _kind(request.path)
        where = request.path + raw
        if "text-500" in where:
            return web.Response(status=500, text=f"Internal Server Error: {said}", content_type="text/plain")
        if "json-error" in where:
            return web.json_response(_error_body(kind, said), status=500)
        response = web.StreamResponse(headers={
            "Content-Type": "application/x-ndjson" if kind == "ollama" else "text/event-stream"})
        await response.prepare(request)
        for frame in _stream(kind, said):
            await response.write(frame)
            await asyncio.sleep(0.05)  # each frame its own read: the error comes after the stream started
        await response.write_eof()
        return response


def _kind(path: str) -> str:
    if path.startswith("/openai/deployments/"):
        return "azure"
    if path.endswith("/chat/completions"):
        return "openai"
    if path.endswith("/messages"):
        return "anthropic"
    if "generateContent" in path or "GenerateContent" in path:
        return "gemini"
    return "ollama"


def _error_body(kind: str, said: str) -> Any:
    if kind == "anthropic":
        return {"type": "error", "error": {"type": "api_error", "message": said}}
    if kind == "gemini":
        return {"error": {"code": 500, "message": said, "status": "INTERNAL"}}
    if kind == "ollama":
        return {"error": said}
    return {"error": {"message": said, "type": "server_error", "param": None, "code": None}}


def _sse(obj: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(obj)}\n\n".encode()


def _stream(kind: str, said: str) -> list[bytes]:
    if kind == "anthropic":
        message = {"id": "msg_1", "type": "message", "role": "assistant", "model": "m", "content": [],
                   "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 3, "output_tokens": 0}}
        return [
            _sse({"type": "message_start", "message": message}, "message_start"),
            _sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                 "content_block_start"),
            _sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
                 "content_block_delta"),
            _sse(_error_body(kind, said), "error"),
        ]
    if kind == "gemini":
        chunk = {"candidates": [{"content": {"role": "model", "parts": [{"text": "Hi"}]}, "index": 0}]}
        return [_sse(chunk), _sse(_error_body(kind, said))]
    if kind == "ollama":
        chunk = {"model": "m", "created_at": "2026-01-01T00:00:00Z", "message": {"role": "assistant", "content": "Hi"},
                 "done": False}
        return [json.dumps(chunk).encode() + b"\n", json.dumps(_error_body(kind, said)).encode() + b"\n"]
    chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
             "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}, "finish_reason": None}]}
    return [_sse(chunk), _sse(_error_body(kind, said))]
