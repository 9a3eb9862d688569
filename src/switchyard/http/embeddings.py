"""POST /v1/embeddings, with float or base64 (the openai SDK's default) encoding."""

from __future__ import annotations

import base64
from array import array
from collections.abc import Sequence
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from switchyard.http.auth import authenticate
from switchyard.http.body import read_json
from switchyard.http.state import call_context, services
from switchyard.protocol.openai import parse_embedding_request

__all__ = ["embeddings"]


def _encode(vector: Sequence[float], fmt: str) -> Any:
    if fmt == "base64":
        packed = array("f", vector)
        if packed.itemsize != 4:  # pragma: no cover - every CPython platform has 4-byte floats
            raise RuntimeError("float32 required")
        return base64.b64encode(packed.tobytes()).decode("ascii")  # little-endian on x86/arm
    return list(vector)


async def embeddings(request: Request) -> Response:
    svc = services(request)
    principal = await authenticate(request)
    req = parse_embedding_request(await read_json(request, svc.settings.max_body_bytes))
    result = await svc.gateway.embed(principal, req, call_context(request))
    payload = {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": _encode(vec, req.encoding_format)}
            for i, vec in enumerate(result.vectors)
        ],
        "model": req.model,
        "usage": {"prompt_tokens": result.usage.prompt_tokens, "total_tokens": result.usage.prompt_tokens},
    }
    return Response(orjson.dumps(payload), media_type="application/json")
