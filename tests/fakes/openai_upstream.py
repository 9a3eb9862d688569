"""A fake OpenAI API upstream speaking the real wire format (chat, legacy completions,
embeddings, models, and the Responses API: ``openai_responses.py``), with knobs selected by the
request's ``model``:

``slow-stream``      50 content chunks, 0.2 s apart
``fail-mid-stream``  role chunk + 3 content chunks, then the TCP connection is aborted
``slow``             sleeps 5 s before answering
``no-usage``         never reports usage (not even with ``stream_options.include_usage``)
``cached``           a prompt cache hit, as OpenAI reports one: a prompt of 1024 tokens or more has
                     its longest prefix of a multiple of 128 tokens reported as
                     ``prompt_tokens_details.cached_tokens`` (a part of ``prompt_tokens``)
``error-400|401|429|500|503``  OpenAI error bodies (429: ``Retry-After: 7``, 503: ``3``)

A ``planner`` scripts a chat answer: called with each chat body, it returns ``("text", text)``,
``("tool", (name, arguments_json))`` or None (the default behaviour).
"""

from __future__ import annotations

import base64
import json
import math
import secrets
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any

from aiohttp import web

from ._gen import (
    apply_limit,
    apply_stop,
    content_text,
    count_words,
    embedding,
    instance_for,
    last_text,
    split_words,
)
from ._server import FakeServer
from .openai_responses import ResponsesAPI

Responder = Callable[[dict[str, Any]], str]
Planner = Callable[[dict[str, Any]], "tuple[str, Any] | None"]
SSE = "text/event-stream; charset=utf-8"

DEFAULT_MODELS = ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small"]
SLOW_STREAM_TEXT = " ".join(f"tick{i}" for i in range(50))
FAIL_TEXT = "this stream will be cut off after three chunks, never to finish"

ERRORS: dict[str, tuple[int, dict[str, Any], dict[str, str]]] = {
    "error-400": (400, {"message": "Invalid value for 'temperature': expected a number between 0 and 2.",
                        "type": "invalid_request_error", "param": "temperature", "code": "invalid_value"}, {}),
    "error-401": (401, {"message": "Incorrect API key provided: sk-abc...xyz. You can find your API key at "
                        "https://platform.openai.com/account/api-keys.",
                        "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}, {}),
    "error-429": (429, {"message": "Rate limit reached for requests. Please try again in 7s.",
                        "type": "rate_limit_error", "param": None, "code": "rate_limit_exceeded"},
                  {"Retry-After": "7"}),
    "error-500": (500, {"message": "The server had an error while processing your request. Sorry about that!",
                        "type": "server_error", "param": None, "code": None}, {}),
    "error-503": (503, {"message": "The engine is currently overloaded, please try again later.",
                        "type": "server_error", "param": None, "code": None}, {"Retry-After": "3"}),
}


def error_response(status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                   code: str | None = None, headers: dict[str, str] | None = None) -> web.Response:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return web.json_response(body, status=status, headers=headers)


def sse(obj: Any) -> bytes:
    return f"data: {json.dumps(obj, separators=(',', ':'))}\n\n".encode()


class _Bad(Exception):
    def __init__(self, response: web.Response) -> None:
        self.response = response


class FakeOpenAI(FakeServer):
    """Fake ``https://api.openai.com/v1`` on 127.0.0.1; see the module docstring."""

    def __init__(self, *, api_key: str | None = None, models: list[str] | None = None,
                 responder: Responder | None = None, tool_arguments: dict[str, Any] | None = None,
                 planner: Planner | None = None) -> None:
        super().__init__()
        self.planner = planner
        self.api_key = api_key
        self.models = list(DEFAULT_MODELS if models is None else models)
        self.responder = responder
        self.tool_arguments = {"city": "Paris"} if tool_arguments is None else tool_arguments
        self.responses_api = ResponsesAPI()

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    # ------------------------------------------------------------------ plumbing
    def _routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_post("/v1/responses", self._responses)
        app.router.add_get("/v1/responses/{response_id}", self._get_response)
        app.router.add_delete("/v1/responses/{response_id}", self._delete_response)
        app.router.add_get("/v1/responses/{response_id}/input_items", self._response_input_items)
        app.router.add_post("/v1/responses/{response_id}/cancel", self._cancel_response)
        app.router.add_get("/v1/models", self._list_models)
        app.router.add_get("/v1/models/{model_id:.+}", self._get_model)
        app.router.add_route("*", "/{tail:.*}", self._not_found)

    def _middlewares(self) -> list[Any]:
        return [self._record_middleware, self._auth_middleware]

    def _extra_headers(self) -> dict[str, str]:
        return {"x-request-id": f"req_{secrets.token_hex(16)}", "openai-processing-ms": "3",
                "openai-version": "2020-10-01"}

    @web.middleware
    async def _auth_middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self.api_key is None:
            return await handler(request)
        auth = request.headers.get("Authorization", "")
        if not auth:
            return error_response(401, "You didn't provide an API key. You need to provide your API key in an "
                                  "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).")
        key = auth[7:] if auth[:7].lower() == "bearer " else auth
        if key != self.api_key:
            masked = f"{key[:3]}{'*' * max(len(key) - 7, 0)}{key[-4:]}" if len(key) > 7 else key
            return error_response(401, f"Incorrect API key provided: {masked}. You can find your API key at "
                                  "https://platform.openai.com/account/api-keys.", code="invalid_api_key")
        return await handler(request)

    async def _not_found(self, request: web.Request) -> web.Response:
        return error_response(404, f"Invalid URL ({request.method} {request.path})")

    async def _prelude(self, request: web.Request, *required: str) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise _Bad(error_response(400, "We could not parse the JSON body of your request. (HINT: This likely "
                                      "means you aren't using your HTTP library correctly.)"))
        for name in ("model", *required):
            if body.get(name) is None:
                raise _Bad(error_response(400, f"Missing required parameter: '{name}'.", param=name,
                                          code="missing_required_parameter"))
        messages = body.get("messages", [{}])
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise _Bad(error_response(400, f"Invalid 'messages': expected a non-empty array of objects, got "
                                      f"{json.dumps(messages)[:100]}.", param="messages", code="invalid_value"))
        if body["model"] in ERRORS:
            status, err, headers = ERRORS[body["model"]]
            raise _Bad(web.json_response({"error": err}, status=status, headers=headers))
        if body.get("stream_options") is not None and body.get("stream") is not True:
            raise _Bad(error_response(400, "The 'stream_options' parameter is only allowed when 'stream' is "
                                      "enabled.", param="stream_options", code="invalid_value"))
        if body["model"] == "slow":
            await self.slow(5.0)
        return body

    def _head(self, body: dict[str, Any], prefix: str, obj: str) -> dict[str, Any]:
        return {"id": f"{prefix}-{secrets.token_hex(12)}", "object": obj, "created": int(time.time()),
                "model": body["model"], "system_fingerprint": "fp_fake0001"}

    def _usage(self, body: dict[str, Any], prompt: int, completion: int) -> dict[str, Any] | None:
        if body["model"] == "no-usage":
            return None
        cached = prompt // 128 * 128 if body["model"] == "cached" and prompt >= 1024 else 0
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
                "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                              "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}

    async def _send(self, request: web.Request, body: dict[str, Any], events: Iterator[dict[str, Any]],
                    usage: dict[str, Any] | None, *, legacy: bool = False) -> web.StreamResponse:
        """Stream *events* (partial chunks holding ``choices``) as SSE, then usage and ``[DONE]``."""
        include = (body.get("stream_options") or {}).get("include_usage") is True and usage is not None
        head = self._head(body, "cmpl" if legacy else "chatcmpl",
                          "text_completion" if legacy else "chat.completion.chunk")
        if not legacy:
            head["service_tier"] = "default"
        return await self.stream(
            request, _with_head(head, events, include, usage), content_type=SSE,
            delay=0.2 if body["model"] == "slow-stream" else 0.0,
            cut_after=4 if body["model"] == "fail-mid-stream" else None,
        )

    # ---------------------------------------------------------- chat completions
    def _plan(self, body: dict[str, Any]) -> tuple[str, Any]:
        """('tool', (name, arguments)) or ('text', text)."""
        if self.planner is not None:
            planned = self.planner(body)
            if planned is not None:
                return planned
        messages = body["messages"]
        model = body["model"]
        last = messages[-1]
        tools = [t for t in body.get("tools") or []
                 if isinstance(t, dict) and t.get("type") == "function" and (t.get("function") or {}).get("name")]
        choice = body.get("tool_choice")
        if tools and choice != "none" and last.get("role") != "tool":
            name = tools[0]["function"]["name"]
            if isinstance(choice, dict) and (choice.get("function") or {}).get("name"):
                name = choice["function"]["name"]
            return "tool", (name, json.dumps(self.tool_arguments))
        fmt = body.get("response_format") or {}
        if model == "slow-stream":
            text = SLOW_STREAM_TEXT
        elif model == "fail-mid-stream":
            text = FAIL_TEXT
        elif last.get("role") == "tool":
            text = f"tool said: {content_text(last.get('content'))}"
        elif fmt.get("type") == "json_object":
            text = json.dumps({"ok": True, "echo": last_text(messages)})
        elif fmt.get("type") == "json_schema":
            text = json.dumps(instance_for((fmt.get("json_schema") or {}).get("schema") or {}))
        elif self.responder is not None:
            text = self.responder(body)
        else:
            text = f"echo: {last_text(messages)}"
        return "text", text

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await self._prelude(request, "messages")
        except _Bad as bad:
            return bad.response
        n = body.get("n") or 1
        kind, plan = self._plan(body)
        prompt_tokens = count_words(body["messages"])
        if kind == "tool":
            name, args = plan
            call_id = f"call_{secrets.token_hex(12)}"
            step = max(1, math.ceil(len(args) / 4))
            frags = [args[i : i + step] for i in range(0, len(args), step)]
            usage = self._usage(body, prompt_tokens, len(frags) * n)
            if body.get("stream") is True:
                return await self._send(request, body, _tool_events(n, call_id, name, frags), usage)
            call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}
            msg = {"role": "assistant", "content": None, "refusal": None, "annotations": [], "tool_calls": [call]}
            choices = [{"index": i, "message": msg, "logprobs": None, "finish_reason": "tool_calls"}
                       for i in range(n)]
        else:
            text = apply_stop(plan, body.get("stop"))
            words, cut = apply_limit(split_words(text), body.get("max_completion_tokens", body.get("max_tokens")))
            finish = "length" if cut else "stop"
            top = body.get("top_logprobs") or 0
            lps = [_token_logprob(w, i, top) for i, w in enumerate(words)] if body.get("logprobs") else None
            usage = self._usage(body, prompt_tokens, len(words) * n)
            if body.get("stream") is True:
                return await self._send(request, body, _text_events(n, words, lps, finish), usage)
            msg = {"role": "assistant", "content": "".join(words), "refusal": None, "annotations": []}
            logprobs = {"content": lps, "refusal": None} if lps is not None else None
            choices = [{"index": i, "message": msg, "logprobs": logprobs, "finish_reason": finish}
                       for i in range(n)]
        resp = {**self._head(body, "chatcmpl", "chat.completion"), "choices": choices, "service_tier": "default"}
        if usage is not None:
            resp["usage"] = usage
        return web.json_response(resp)

    # -------------------------------------------------------------- responses
    async def _responses(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await self._prelude(request)
        except _Bad as bad:
            return bad.response
        previous = body.get("previous_response_id")
        history = self.responses_api.history(previous)
        if history is None:
            return error_response(400, f"Previous response with id '{previous}' not found.",
                                  param="previous_response_id", code="previous_response_not_found")
        if body.get("stream") is True:
            return await self.stream(
                request, self.responses_api.events(body, history), content_type=SSE,
                delay=0.2 if body["model"] == "slow-stream" else 0.0,
                cut_after=4 if body["model"] == "fail-mid-stream" else None,
            )
        return web.json_response(self.responses_api.whole(body, history))

    @staticmethod
    def _no_response(response_id: str) -> web.Response:
        return error_response(404, f"Response with id '{response_id}' not found.")

    async def _get_response(self, request: web.Request) -> web.Response:
        response_id = request.match_info["response_id"]
        found = self.responses_api.stored.get(response_id)
        return web.json_response(found["response"]) if found else self._no_response(response_id)

    async def _delete_response(self, request: web.Request) -> web.Response:
        response_id = request.match_info["response_id"]
        if self.responses_api.stored.pop(response_id, None) is None:
            return self._no_response(response_id)
        return web.json_response({"id": response_id, "object": "response", "deleted": True})

    async def _response_input_items(self, request: web.Request) -> web.Response:
        response_id = request.match_info["response_id"]
        page = self.responses_api.input_items(response_id, request.query.get("order", "desc"))
        return web.json_response(page) if page is not None else self._no_response(response_id)

    async def _cancel_response(self, request: web.Request) -> web.Response:
        response_id = request.match_info["response_id"]
        if response_id not in self.responses_api.stored:
            return self._no_response(response_id)
        return error_response(400, "Only responses created with background=true can be cancelled")

    # -------------------------------------------------------- legacy completions
    async def _completions(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await self._prelude(request, "prompt")
        except _Bad as bad:
            return bad.response
        prompt = body["prompt"]
        if isinstance(prompt, str) or (isinstance(prompt, list) and prompt and isinstance(prompt[0], int)):
            prompts = [prompt]
        else:
            prompts = list(prompt) or [""]
        texts = [p if isinstance(p, str) else " ".join(map(str, p)) for p in prompts]
        n = body.get("n") or 1
        choices, events, completion_tokens = [], [], 0
        for p_index, ptext in enumerate(texts):
            if body["model"] == "slow-stream":
                out = SLOW_STREAM_TEXT
            elif body["model"] == "fail-mid-stream":
                out = FAIL_TEXT
            else:
                out = self.responder(body) if self.responder else f"echo: {ptext}"
            out = apply_stop(out, body.get("stop"))
            words, cut = apply_limit(split_words(out), body.get("max_tokens"))
            if body.get("echo"):
                words = [ptext, *words]
            finish = "length" if cut else "stop"
            for j in range(n):
                index = p_index * n + j
                completion_tokens += len(words)
                lp = _legacy_logprobs(words, body["logprobs"]) if body.get("logprobs") is not None else None
                choices.append({"text": "".join(words), "index": index, "logprobs": lp, "finish_reason": finish})
                events += [{"choices": [{"text": w, "index": index, "logprobs": None, "finish_reason": None}]}
                           for w in words]
                events.append({"choices": [{"text": "", "index": index, "logprobs": None, "finish_reason": finish}]})
        prompt_tokens = max(sum(len(p.split()) if isinstance(p, str) else len(p) for p in prompts), 1)
        usage = self._usage(body, prompt_tokens, completion_tokens)
        if body.get("stream") is True:
            return await self._send(request, body, iter(events), usage, legacy=True)
        resp = {**self._head(body, "cmpl", "text_completion"), "choices": choices}
        if usage is not None:
            resp["usage"] = usage
        return web.json_response(resp)

    # ----------------------------------------------------------------- embeddings
    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await self._prelude(request, "input")
        except _Bad as bad:
            return bad.response
        raw = body["input"]
        if isinstance(raw, str) or (isinstance(raw, list) and raw and all(isinstance(x, int) for x in raw)):
            inputs: list[Any] = [raw]
        else:
            inputs = raw if isinstance(raw, list) else []
        ok = inputs and all((isinstance(x, str) and x) or (isinstance(x, list) and x and all(
            isinstance(t, int) and not isinstance(t, bool) for t in x)) for x in inputs)
        if not ok:
            return error_response(400, "'$.input' is invalid. Please check the API reference: "
                                  "https://platform.openai.com/docs/api-reference.", param="input")
        dims = body.get("dimensions") or 8
        b64 = body.get("encoding_format") == "base64"
        data, tokens = [], 0
        for i, item in enumerate(inputs):
            vec = embedding(item if isinstance(item, str) else json.dumps(item), dims)
            tokens += max(len(item.split()), 1) if isinstance(item, str) else len(item)
            emb: Any = base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode() if b64 else vec
            data.append({"object": "embedding", "index": i, "embedding": emb})
        resp: dict[str, Any] = {"object": "list", "data": data, "model": body["model"]}
        if body["model"] != "no-usage":
            resp["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
        return web.json_response(resp)

    # --------------------------------------------------------------------- models
    @staticmethod
    def _model(model_id: str) -> dict[str, Any]:
        return {"id": model_id, "object": "model", "created": 1700000000, "owned_by": "system"}

    async def _list_models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [self._model(m) for m in self.models]})

    async def _get_model(self, request: web.Request) -> web.Response:
        model_id = request.match_info["model_id"]
        if model_id not in self.models:
            return error_response(404, f"The model '{model_id}' does not exist", param="model",
                                  code="model_not_found")
        return web.json_response(self._model(model_id))


def _with_head(head: dict[str, Any], events: Iterator[Any], include: bool,
               usage: dict[str, Any] | None) -> Iterator[bytes]:
    for event in events:
        chunk = {**head, **event}
        if include:
            chunk["usage"] = None
        yield sse(chunk)
    if include:
        yield sse({**head, "choices": [], "usage": usage})
    yield b"data: [DONE]\n\n"


def _text_events(n: int, words: list[str], lps: list[Any] | None, finish: str) -> Iterator[dict[str, Any]]:
    for i in range(n):
        yield {"choices": [{"index": i, "delta": {"role": "assistant", "content": "", "refusal": None},
                            "logprobs": None, "finish_reason": None}]}
    for k, word in enumerate(words):
        for i in range(n):
            logprobs = {"content": [lps[k]], "refusal": None} if lps is not None else None
            yield {"choices": [{"index": i, "delta": {"content": word}, "logprobs": logprobs,
                                "finish_reason": None}]}
    for i in range(n):
        yield {"choices": [{"index": i, "delta": {}, "logprobs": None, "finish_reason": finish}]}


def _tool_events(n: int, call_id: str, name: str, frags: list[str]) -> Iterator[dict[str, Any]]:
    for i in range(n):
        call = {"index": 0, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
        yield {"choices": [{"index": i, "delta": {"role": "assistant", "content": None, "refusal": None,
                                                  "tool_calls": [call]}, "logprobs": None, "finish_reason": None}]}
    for frag in frags:
        for i in range(n):
            yield {"choices": [{"index": i, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": frag}}]},
                                "logprobs": None, "finish_reason": None}]}
    for i in range(n):
        yield {"choices": [{"index": i, "delta": {}, "logprobs": None, "finish_reason": "tool_calls"}]}


def _token_logprob(token: str, position: int, top: int) -> dict[str, Any]:
    logprob = -0.05 * (position % 7) - 0.01
    alts = [{"token": token, "logprob": logprob, "bytes": list(token.encode())}]
    for j in range(1, top):
        alt = f"{token.strip() or '_'}~{j}"
        alts.append({"token": alt, "logprob": logprob - j, "bytes": list(alt.encode())})
    return {"token": token, "logprob": logprob, "bytes": list(token.encode()), "top_logprobs": alts[:top]}


def _legacy_logprobs(words: list[str], top: int) -> dict[str, Any]:
    offsets, pos = [], 0
    for word in words:
        offsets.append(pos)
        pos += len(word)
    lps = [_token_logprob(w, i, max(top, 1)) for i, w in enumerate(words)]
    return {"tokens": words, "token_logprobs": [lp["logprob"] for lp in lps], "text_offset": offsets,
            "top_logprobs": [{alt["token"]: alt["logprob"] for alt in lp["top_logprobs"][:top]} for lp in lps]}
