"""A fake Anthropic API (``https://api.anthropic.com/v1``) speaking the real wire format:
``POST /v1/messages`` (JSON, or SSE with ``event:`` lines and ``ping``s) and ``GET /v1/models``
(paginated with ``limit`` / ``after_id``). Requests need ``x-api-key`` (when the fake has a key)
and ``anthropic-version``; bodies are validated like the real API does (required ``max_tokens``,
strictly alternating roles, ``tool_result`` ids matching the previous turn's ``tool_use`` ids,
no unknown top-level fields). Every SSE event is written in two halves, split mid-event.

Answers: a tool call when tools are offered (and ``tool_choice`` is not none) unless the last
user turn holds tool results; then ``tool said: <result>``; with ``output_config.format`` a JSON
instance of the schema; otherwise ``echo: <last user text>``. Stop sequences and ``max_tokens``
(in words) cut the text. Tool arguments stream as ``input_json_delta`` fragments of 5 characters,
so fragments split inside strings and escapes.

Knobs selected by the request's ``model``:
``overloaded``       529 overloaded_error
``rate-limited``     429 rate_limit_error with ``retry-after: 7``
``server-error``     500 api_error
``too-large``        413 request_too_large
``error-mid-stream`` (streams) 2 deltas, then ``event: error`` overloaded_error
``cut-mid-stream``   (streams) the connection is dropped after a few deltas
``slow-stream``      40 text deltas, 0.1 s apart
``max-tokens``       text cut after 3 words, stop_reason max_tokens
``refusal``          stop_reason refusal
``parallel-tools``   a text block, then two tool_use blocks (one with disable_parallel_tool_use)
``cached``           usage reports cache writes (20) and cache reads (100), beside the uncached
                     ``input_tokens`` (Anthropic's meaning: input_tokens excludes both)

``cache_control`` is accepted on content blocks, system blocks and tools, and checked as the
real API does (``{"type": "ephemeral"}``, an optional ``ttl`` of ``5m`` or ``1h``, at most 4).
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from typing import Any

from aiohttp import web

from ._gen import apply_limit, content_text, instance_for, split_words
from ._server import FakeServer

SSE = "text/event-stream; charset=utf-8"
DEFAULT_MODELS = ["claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1"]
TOOL_ARGUMENTS: dict[str, Any] = {"city": "Paris", "note": 'say "hi"\n\tété \\ 東京'}
REFUSAL_TEXT = "I can't help with that."
SLOW_STREAM_TEXT = " ".join(f"tick{i}" for i in range(40))
ERRORS: dict[str, tuple[int, str, str, dict[str, str]]] = {
    "overloaded": (529, "overloaded_error", "Overloaded", {}),
    "rate-limited": (429, "rate_limit_error", "This request would exceed the rate limit for your organization of "
                     "50 requests per minute. For details, refer to: https://docs.claude.com/en/api/rate-limits.",
                     {"retry-after": "7", "anthropic-ratelimit-requests-remaining": "0"}),
    "server-error": (500, "api_error", "Internal server error", {}),
    "too-large": (413, "request_too_large", "Request exceeds the maximum allowed number of bytes.", {}),
}
TOP_LEVEL = {
    "model", "messages", "max_tokens", "system", "stop_sequences", "stream", "temperature", "top_p", "top_k",
    "tools", "tool_choice", "metadata", "output_config", "thinking", "service_tier", "container", "mcp_servers",
    "context_management", "inference_geo",
}
BLOCKS = {"user": {"text", "image", "tool_result", "document"}, "assistant": {"text", "tool_use", "thinking"}}
IMAGE_TYPES = {"image/jpeg", "image/png", "image/gif", "image/webp"}
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")


def error_response(status: int, type_: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    body = {"type": "error", "error": {"type": type_, "message": message}, "request_id": f"req_{secrets.token_hex(12)}"}
    return web.json_response(body, status=status, headers=headers)


def sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()


def _halves(events: Iterator[bytes]) -> Iterator[bytes]:
    """Each event in two writes, cut in the middle (of a line, a JSON string, even a UTF-8 character)."""
    for event in events:
        mid = len(event) // 2
        yield event[:mid]
        yield event[mid:]


# ------------------------------------------------------------------------ validation
def _cache_problem(holder: Any, where: str) -> str | None:
    control = holder.get("cache_control") if isinstance(holder, dict) else None
    if control is None:
        return None
    if not isinstance(control, dict) or control.get("type") != "ephemeral" or set(control) - {"type", "ttl"}:
        return f"{where}.cache_control.type: Input tag found using 'type' does not match any of the expected tags"
    if control.get("ttl", "5m") not in ("5m", "1h"):
        return f"{where}.cache_control.ttl: Input should be '5m' or '1h'"
    return None


def _breakpoints(body: dict[str, Any]) -> int:
    """How many ``cache_control`` marks the request carries (the real API allows 4)."""
    holders: list[Any] = list(body.get("tools") or [])
    if isinstance(body.get("system"), list):
        holders += body["system"]
    for msg in body.get("messages") or []:
        if isinstance(msg, dict) and isinstance(msg.get("content"), list):
            for block in msg["content"]:
                holders.append(block)
                if isinstance(block, dict) and isinstance(block.get("content"), list):
                    holders += block["content"]
    return sum(1 for h in holders if isinstance(h, dict) and h.get("cache_control") is not None)


def _block_problem(block: Any, role: str, where: str) -> str | None:
    if not isinstance(block, dict) or block.get("type") not in BLOCKS[role]:
        kind = block.get("type") if isinstance(block, dict) else None
        return f"{where}.type: Input tag '{kind}' found using 'type' does not match any of the expected tags"
    cache = _cache_problem(block, where)
    if cache:
        return cache
    kind = block["type"]
    if kind == "text" and (not isinstance(block.get("text"), str) or not block["text"]):
        return f"{where}.text: text content blocks must be non-empty"
    if kind == "image":
        source = block.get("source") or {}
        if source.get("type") == "base64":
            if source.get("media_type") not in IMAGE_TYPES or not source.get("data"):
                return f"{where}.source.base64: invalid image source"
        elif source.get("type") != "url" or not str(source.get("url", "")).startswith(("http://", "https://")):
            return f"{where}.source: invalid image source"
    if kind == "tool_use" and not (block.get("id") and block.get("name") and isinstance(block.get("input"), dict)):
        return f"{where}: tool_use blocks need id, name and an object input"
    if kind == "tool_result":
        if not block.get("tool_use_id"):
            return f"{where}.tool_use_id: Field required"
        content = block.get("content")
        if content is not None and not isinstance(content, str):
            for k, part in enumerate(content):
                problem = _block_problem(part, "user", f"{where}.content.{k}")
                if problem:
                    return problem
    return None


def _messages_problem(messages: Any) -> str | None:
    if not isinstance(messages, list):
        return "messages: Field required"
    if not messages:
        return "messages: at least one message is required"
    pending: list[str] = []  # tool_use ids of the previous assistant turn
    for i, msg in enumerate(messages):
        role = msg.get("role") if isinstance(msg, dict) else None
        if role not in ("user", "assistant"):
            return f"messages.{i}.role: Input should be 'user' or 'assistant'"
        if i and messages[i - 1]["role"] == role:
            return (f'messages: roles must alternate between "user" and "assistant", but found multiple "{role}" '
                    "roles in a row")
        content = msg.get("content")
        if isinstance(content, str):
            blocks: list[Any] = [{"type": "text", "text": content}]
        elif isinstance(content, list) and content:
            blocks = content
        else:
            return f"messages.{i}: all messages must have non-empty content"
        for j, block in enumerate(blocks):
            problem = _block_problem(block, role, f"messages.{i}.content.{j}")
            if problem:
                return problem
        results = [b["tool_use_id"] for b in blocks if b["type"] == "tool_result"]
        for j, block in enumerate(blocks):
            if block["type"] == "tool_result" and block["tool_use_id"] not in pending:
                return (f"messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` blocks: "
                        f"{block['tool_use_id']}. Each `tool_result` block must have a corresponding `tool_use` "
                        "block in the previous message.")
        missing = [t for t in pending if t not in results]
        if missing:
            return (f"messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately after: "
                    f"{', '.join(missing)}. Each `tool_use` block must have a corresponding `tool_result` block "
                    "in the next message.")
        pending = [b["id"] for b in blocks if b["type"] == "tool_use"]
    return None


def _problem(body: Any) -> str | None:
    """The message the real API answers 400 with, or None."""
    if not isinstance(body, dict):
        return "There was an issue with your request body: expected an object"
    for key in body:
        if key not in TOP_LEVEL:
            return f"{key}: Extra inputs are not permitted"
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "model: Field required"
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
        return "max_tokens: Field required"
    if max_tokens < 0:
        return "max_tokens: Input should be greater than or equal to 0"
    problem = _messages_problem(body.get("messages"))
    if problem:
        return problem
    system = body.get("system")
    if system is not None and not isinstance(system, str) and not (
        isinstance(system, list) and all(isinstance(b, dict) and b.get("type") == "text" and b.get("text")
                                         for b in system)):
        return "system: Input should be a valid string or a list of text blocks"
    for k, block in enumerate(system if isinstance(system, list) else []):
        problem = _cache_problem(block, f"system.{k}")
        if problem:
            return problem
    if _breakpoints(body) > 4:
        return "A maximum of 4 blocks with cache_control may be provided. Found more."
    for key, top in (("temperature", 1.0), ("top_p", 1.0)):
        value = body.get(key)
        if value is not None and (not isinstance(value, int | float) or not 0 <= value <= top):
            return f"{key}: range: 0..{top}"
    stops = body.get("stop_sequences")
    if stops is not None and (not isinstance(stops, list) or not all(isinstance(s, str) and s.strip()
                                                                     for s in stops)):
        return "stop_sequences: each stop sequence must contain non-whitespace"
    tools = body.get("tools") or []
    names = []
    for k, tool in enumerate(tools):
        if not isinstance(tool, dict) or not TOOL_NAME.match(str(tool.get("name", ""))):
            return f"tools.{k}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$'"
        schema = tool.get("input_schema")
        if not isinstance(schema, dict) or schema.get("type") != "object":
            return f"tools.{k}.custom.input_schema.type: Input should be 'object'"
        problem = _cache_problem(tool, f"tools.{k}")
        if problem:
            return problem
        names.append(tool["name"])
    choice = body.get("tool_choice")
    if choice is not None:
        if not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "tool", "none"):
            return "tool_choice: Input tag found using 'type' does not match any of the expected tags"
        if choice["type"] == "tool" and choice.get("name") not in names:
            return f"tool_choice.tool.name: Tool '{choice.get('name')}' not found in tools"
        if choice["type"] == "none" and "disable_parallel_tool_use" in choice:
            return "tool_choice.none.disable_parallel_tool_use: Extra inputs are not permitted"
    metadata = body.get("metadata")
    if metadata is not None and (not isinstance(metadata, dict) or set(metadata) - {"user_id"}):
        return "metadata: Extra inputs are not permitted"
    fmt = (body.get("output_config") or {}).get("format")
    if fmt is not None and (fmt.get("type") != "json_schema" or not isinstance(fmt.get("schema"), dict)):
        return "output_config.format: Input tag found using 'type' does not match any of the expected tags"
    return None


# ------------------------------------------------------------------------ generation
def _words(body: dict[str, Any]) -> int:
    system = body.get("system")
    text = system if isinstance(system, str) else " ".join(b.get("text", "") for b in system or [])
    total = len(text.split())
    for msg in body["messages"]:
        total += len(content_text(msg["content"]).split())
    return max(total, 1)


def _last_user_blocks(body: dict[str, Any]) -> list[dict[str, Any]]:
    last = body["messages"][-1]
    if last["role"] != "user":
        return []
    content = last["content"]
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


class FakeAnthropic(FakeServer):
    """Fake Anthropic API on 127.0.0.1; see the module docstring."""

    def __init__(self, *, api_key: str | None = None, models: list[str] | None = None, page_size: int = 1000,
                 tool_arguments: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.api_key = api_key
        self.models = list(DEFAULT_MODELS if models is None else models)
        self.page_size = page_size
        self.tool_arguments = TOOL_ARGUMENTS if tool_arguments is None else tool_arguments

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def messages_requests(self) -> list[dict[str, Any]]:
        """Bodies of the ``POST /v1/messages`` requests received, oldest first."""
        return [r.body for r in self.requests if r.path == "/v1/messages" and r.method == "POST"]

    # ------------------------------------------------------------------ plumbing
    def _routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_get("/v1/models", self._list_models)
        app.router.add_route("*", "/{tail:.*}", self._not_found)

    def _middlewares(self) -> list[Any]:
        return [self._record_middleware, self._auth_middleware]

    def _extra_headers(self) -> dict[str, str]:
        return {"request-id": f"req_{secrets.token_hex(12)}", "anthropic-organization-id": "org-fake"}

    @web.middleware
    async def _auth_middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self.api_key is not None and request.headers.get("x-api-key") != self.api_key:
            return error_response(401, "authentication_error", "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            return error_response(400, "invalid_request_error", "anthropic-version: header is required")
        return await handler(request)

    async def _not_found(self, request: web.Request) -> web.Response:
        return error_response(404, "not_found_error", "Not Found")

    async def _list_models(self, request: web.Request) -> web.Response:
        limit = min(int(request.query.get("limit", "20")), self.page_size)
        after = request.query.get("after_id")
        start = self.models.index(after) + 1 if after in self.models else 0
        page = self.models[start : start + limit]
        data = [{"type": "model", "id": m, "display_name": m.replace("-", " ").title(),
                 "created_at": "2025-09-29T00:00:00Z"} for m in page]
        return web.json_response({"data": data, "has_more": start + limit < len(self.models),
                                  "first_id": page[0] if page else None, "last_id": page[-1] if page else None})

    # ------------------------------------------------------------------ messages
    def _plan(self, body: dict[str, Any]) -> tuple[list[dict[str, Any]], str, str | None]:
        """(content blocks, stop_reason, stop_sequence)."""
        model = body["model"]
        tools = body.get("tools") or []
        choice = body.get("tool_choice") or {"type": "auto"}
        last = _last_user_blocks(body)
        results = [b for b in last if b.get("type") == "tool_result"]
        if tools and choice["type"] != "none" and not results:
            name = choice["name"] if choice["type"] == "tool" else tools[0]["name"]
            blocks: list[dict[str, Any]] = []
            count = 1
            if model == "parallel-tools":
                blocks.append({"type": "text", "text": "Let me check both."})
                count = 1 if choice.get("disable_parallel_tool_use") else 2
            for k in range(count):
                blocks.append({"type": "tool_use", "id": f"toolu_{secrets.token_hex(12)}",
                               "name": name if k == 0 else tools[-1]["name"], "input": self.tool_arguments})
            return blocks, "tool_use", None
        fmt = (body.get("output_config") or {}).get("format")
        stop_reason = "end_turn"
        if results:
            text = "tool said: " + " | ".join(content_text(r.get("content")) for r in results)
        elif fmt is not None:
            text = json.dumps(instance_for(fmt["schema"]))
        elif model == "refusal":
            text, stop_reason = REFUSAL_TEXT, "refusal"
        elif model == "slow-stream":
            text = SLOW_STREAM_TEXT
        else:
            text = "echo: " + content_text([b for b in last if b.get("type") == "text"])
        stop_sequence = None
        hits = [(text.find(s), s) for s in body.get("stop_sequences") or [] if s in text]
        if hits:
            cut, stop_sequence = min(hits)
            text, stop_reason = text[:cut], "stop_sequence"
        words, truncated = apply_limit(split_words(text), 3 if model == "max-tokens" else body["max_tokens"])
        if truncated:
            stop_reason, stop_sequence = "max_tokens", None
        return ([{"type": "text", "text": "".join(words)}] if words else []), stop_reason, stop_sequence

    def _usage(self, body: dict[str, Any], output: int) -> dict[str, Any]:
        cached = body["model"] == "cached"
        return {"input_tokens": _words(body), "cache_creation_input_tokens": 20 if cached else 0,
                "cache_read_input_tokens": 100 if cached else 0, "output_tokens": output,
                "service_tier": "standard"}

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            return error_response(400, "invalid_request_error", "There was an issue with your request body: "
                                  "the body is not valid JSON")
        problem = _problem(body)
        if problem:
            return error_response(400, "invalid_request_error", problem)
        if body["model"] in ERRORS:
            status, kind, message, headers = ERRORS[body["model"]]
            return error_response(status, kind, message, headers)
        blocks, stop_reason, stop_sequence = self._plan(body)
        head = {"id": f"msg_{secrets.token_hex(12)}", "type": "message", "role": "assistant", "model": body["model"]}
        if body.get("stream") is True:
            return await self.stream(
                request, _halves(self._events(body, head, blocks, stop_reason, stop_sequence)), content_type=SSE,
                delay=0.1 if body["model"] == "slow-stream" else 0.0,
                cut_after=9 if body["model"] == "cut-mid-stream" else None,
            )
        output = sum(len(split_words(b["text"])) if b["type"] == "text" else 5 for b in blocks)
        return web.json_response({**head, "content": blocks, "stop_reason": stop_reason,
                                  "stop_sequence": stop_sequence, "usage": self._usage(body, max(output, 1))})

    def _events(self, body: dict[str, Any], head: dict[str, Any], blocks: list[dict[str, Any]], stop_reason: str,
                stop_sequence: str | None) -> Iterator[bytes]:
        usage = self._usage(body, 1)
        yield sse("message_start", {"type": "message_start", "message": {
            **head, "content": [], "stop_reason": None, "stop_sequence": None, "usage": usage}})
        output = 0
        for index, block in enumerate(blocks):
            if block["type"] == "text":
                yield sse("content_block_start", {"type": "content_block_start", "index": index,
                                                  "content_block": {"type": "text", "text": ""}})
                pieces = [("text_delta", "text", w) for w in split_words(block["text"])]
            else:
                start = {**block, "input": {}}
                yield sse("content_block_start", {"type": "content_block_start", "index": index,
                                                  "content_block": start})
                args = json.dumps(block["input"], ensure_ascii=False)
                pieces = [("input_json_delta", "partial_json", "")]
                pieces += [("input_json_delta", "partial_json", args[i : i + 5]) for i in range(0, len(args), 5)]
            if index == 0:
                yield sse("ping", {"type": "ping"})
            for n, (kind, key, value) in enumerate(pieces):
                if body["model"] == "error-mid-stream" and n == 2:
                    yield sse("error", {"type": "error", "error": {"type": "overloaded_error",
                                                                   "message": "Overloaded"}})
                    return
                output += 1
                yield sse("content_block_delta", {"type": "content_block_delta", "index": index,
                                                  "delta": {"type": kind, key: value}})
            yield sse("content_block_stop", {"type": "content_block_stop", "index": index})
        yield sse("message_delta", {"type": "message_delta",
                                    "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                                    "usage": {"output_tokens": max(output, 1)}})
        yield sse("message_stop", {"type": "message_stop"})
