"""A fake Azure OpenAI resource (``https://RESOURCE.openai.azure.com``) speaking the real wire
format: ``POST /openai/deployments/{deployment}/chat/completions|completions|embeddings`` and
``GET /openai/models``, each with the ``api-version`` query parameter; and the v1 API's
``POST /openai/v1/responses`` (no ``api-version``; the deployment in the body's ``model``; the
Responses shapes of ``openai_responses.py``, naming the deployed model).

Like Azure it wants the key in the ``api-key`` header (401 "Access denied due to invalid
subscription key..." otherwise), answers 404 "Resource not found" without an ``api-version``
and 400 "API version not supported" for an unknown one, rejects ``stream_options`` before
2024-09-01, names the deployed model (not the deployment) in responses, and annotates answers
with ``prompt_filter_results`` / ``content_filter_results``; streams open with Azure's
choice-less prompt-filter chunk.

Knobs, selected by the deployment name containing them (any deployment is served):
``filtered`` (the completion is cut by the output filter: finish_reason content_filter, and an
annotation-only chunk in streams), ``filtered-prompt`` (400 code content_filter),
``rate-limited`` (429 with Retry-After: 7), ``server-error`` (500), ``overloaded`` (503),
``cut-mid-stream`` (4 events, then the connection is aborted), ``max-tokens`` (3 words, length).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

from aiohttp import web

from ._gen import apply_limit, apply_stop, content_text, count_words, embedding, instance_for, last_text, split_words
from ._server import FakeServer
from .openai_responses import SSE as RESPONSES_SSE
from .openai_responses import ResponsesAPI

SSE = "text/event-stream; charset=utf-8"
API_VERSIONS = frozenset({
    "2023-05-15", "2024-02-01", "2024-06-01", "2024-08-01-preview", "2024-09-01-preview", "2024-10-01-preview",
    "2024-10-21", "2024-12-01-preview", "2025-01-01-preview", "2025-03-01-preview", "2025-04-01-preview",
})
CUT_TEXT = "this stream will be cut off after four events and never finish"
MODELS = ["gpt-4o-2024-08-06", "gpt-4o-mini-2024-07-18", "text-embedding-3-small"]
_SAFE = {"filtered": False, "severity": "safe"}
_FILTERS = {"hate": _SAFE, "self_harm": _SAFE, "sexual": _SAFE, "violence": _SAFE}
_PROMPT_FILTERS = [{"prompt_index": 0, "content_filter_results": {
    **_FILTERS, "jailbreak": {"filtered": False, "detected": False}}}]
_FLAGGED = {**_FILTERS, "violence": {"filtered": True, "severity": "medium"}}


def azure_error(http_status: int, code: str, message: str, headers: dict[str, str] | None = None,
                **extra: Any) -> web.Response:
    body = {"error": {"code": code, "message": message, **extra}}
    return web.json_response(body, status=http_status, headers=headers)


def sse(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


class FakeAzure(FakeServer):
    """Fake Azure OpenAI on 127.0.0.1; see the module docstring.

    ``deployments`` maps deployment names to the model each serves (reported in responses);
    names not in it are served as ``gpt-4o-2024-08-06`` (embeddings: ``text-embedding-3-small``).
    """

    def __init__(self, *, api_key: str | None = None, api_version: str | None = None,
                 deployments: dict[str, str] | None = None, tool_arguments: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.api_key = api_key
        # the api-versions this resource answers: only ``api_version`` when given, else every known one
        self.api_versions = set(API_VERSIONS) if api_version is None else {api_version}
        self.deployments = dict(deployments or {})
        self.tool_arguments = {"city": "Paris"} if tool_arguments is None else tool_arguments
        self.responses_api = ResponsesAPI()

    @property
    def base_url(self) -> str:
        return self.url

    def _routes(self, app: web.Application) -> None:
        app.router.add_post("/openai/deployments/{deployment}/chat/completions", self._chat)
        app.router.add_post("/openai/deployments/{deployment}/completions", self._completions)
        app.router.add_post("/openai/deployments/{deployment}/embeddings", self._embeddings)
        app.router.add_get("/openai/models", self._models)
        app.router.add_post("/openai/v1/responses", self._responses)
        app.router.add_get("/openai/v1/responses/{response_id}", self._get_response)
        app.router.add_route("*", "/{tail:.*}", self._not_found)

    def _middlewares(self) -> list[Any]:
        return [self._record_middleware, self._gate]

    def _extra_headers(self) -> dict[str, str]:
        return {"apim-request-id": secrets.token_hex(16), "x-ms-region": "Sweden Central",
                "x-ratelimit-remaining-requests": "99", "x-ratelimit-remaining-tokens": "99000"}

    @web.middleware
    async def _gate(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self.api_key is not None and request.headers.get("api-key") != self.api_key:
            return azure_error(401, "401", "Access denied due to invalid subscription key or wrong API endpoint. "
                               "Make sure to provide a valid key for an active subscription and use a correct "
                               "regional API endpoint for your resource.")
        version = request.query.get("api-version")
        if request.path.startswith("/openai/v1/"):  # the v1 API takes no api-version
            return await handler(request)
        if not version:
            return azure_error(404, "404", "Resource not found")
        if version not in self.api_versions:
            return azure_error(400, "BadRequest", "API version not supported")
        return await handler(request)

    async def _not_found(self, request: web.Request) -> web.Response:
        return azure_error(404, "404", "Resource not found")

    # ------------------------------------------------------------------ helpers
    async def _prelude(self, request: web.Request, required: str) -> tuple[str, dict[str, Any]] | web.Response:
        deployment = request.match_info["deployment"]
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return azure_error(400, "BadRequest", "Could not parse the JSON body of your request.")
        if body.get(required) is None:
            return azure_error(400, "missing_required_parameter", f"Missing required parameter: '{required}'.",
                               param=required, type="invalid_request_error")
        if "rate-limited" in deployment:
            return azure_error(
                429, "429", f"Requests to the ChatCompletions_Create Operation under Azure OpenAI API version "
                f"{request.query['api-version']} have exceeded token rate limit of your current OpenAI S0 pricing "
                "tier. Please retry after 7 seconds.", headers={"Retry-After": "7", "retry-after-ms": "7000"})
        if "server-error" in deployment:
            return azure_error(500, "InternalServerError", "The server had an error while processing your request. "
                               "Sorry about that!")
        if "overloaded" in deployment:
            return azure_error(503, "ServiceUnavailable", "The service is temporarily unable to process your "
                               "request. Please try again later.", headers={"Retry-After": "3"})
        if "filtered-prompt" in deployment:
            return azure_error(
                400, "content_filter", "The response was filtered due to the prompt triggering Azure OpenAI's content "
                "management policy. Please modify your prompt and retry. To learn more about our content filtering "
                "policies please read our documentation: https://go.microsoft.com/fwlink/?linkid=2198766",
                param="prompt", type=None, status=400,
                innererror={"code": "ResponsibleAIPolicyViolation", "content_filter_result": _FLAGGED})
        version = request.query["api-version"]
        if body.get("stream_options") is not None and version[:10] < "2024-09-01":
            return azure_error(400, "BadRequest", "Unrecognized request argument supplied: stream_options",
                               param=None, type="invalid_request_error")
        return deployment, body

    def _model(self, deployment: str, default: str = "gpt-4o-2024-08-06") -> str:
        return self.deployments.get(deployment, default)

    def _head(self, deployment: str, prefix: str, obj: str) -> dict[str, Any]:
        return {"id": f"{prefix}-{secrets.token_hex(12)}", "object": obj, "created": int(time.time()),
                "model": self._model(deployment), "system_fingerprint": "fp_az0001"}

    @staticmethod
    def _usage(prompt: int, completion: int) -> dict[str, Any]:
        return {"completion_tokens": completion, "prompt_tokens": prompt, "total_tokens": prompt + completion,
                "completion_tokens_details": {"accepted_prediction_tokens": 0, "audio_tokens": 0,
                                              "reasoning_tokens": 0, "rejected_prediction_tokens": 0},
                "prompt_tokens_details": {"audio_tokens": 0, "cached_tokens": 0}}

    async def _stream(self, request: web.Request, deployment: str, body: dict[str, Any],
                      events: list[dict[str, Any]], usage: dict[str, Any], obj: str) -> web.StreamResponse:
        include = (body.get("stream_options") or {}).get("include_usage") is True
        head = self._head(deployment, "chatcmpl" if obj.startswith("chat") else "cmpl", obj)

        def chunks() -> Iterator[bytes]:
            yield sse({"choices": [], "created": 0, "id": "", "model": "", "object": "",
                       "prompt_filter_results": _PROMPT_FILTERS})
            for event in events:
                chunk = {**head, **event}
                if include:
                    chunk["usage"] = None
                yield sse(chunk)
            if include:
                yield sse({**head, "choices": [], "usage": usage})
            yield b"data: [DONE]\n\n"

        return await self.stream(request, chunks(), content_type=SSE,
                                 cut_after=4 if "cut-mid-stream" in deployment else None)

    # ----------------------------------------------------------------- chat
    async def _chat(self, request: web.Request) -> web.StreamResponse:
        got = await self._prelude(request, "messages")
        if isinstance(got, web.Response):
            return got
        deployment, body = got
        messages = body["messages"]
        prompt = count_words(messages)
        tools = [t for t in body.get("tools") or [] if (t.get("function") or {}).get("name")]
        choice = body.get("tool_choice")
        last = messages[-1] if messages else {}
        filtered = "filtered" in deployment
        if tools and choice != "none" and last.get("role") != "tool":
            name = tools[0]["function"]["name"]
            if isinstance(choice, dict) and (choice.get("function") or {}).get("name"):
                name = choice["function"]["name"]
            args = json.dumps(self.tool_arguments)
            call_id = f"call_{secrets.token_hex(12)}"
            usage = self._usage(prompt, 5)
            if body.get("stream") is True:
                call = {"index": 0, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
                events = [
                    {"choices": [{"content_filter_results": {}, "delta": {"role": "assistant", "content": None,
                                  "refusal": None, "tool_calls": [call]}, "finish_reason": None, "index": 0,
                                  "logprobs": None}]},
                    {"choices": [{"content_filter_results": {}, "delta": {"tool_calls": [
                        {"index": 0, "function": {"arguments": args}}]}, "finish_reason": None, "index": 0,
                        "logprobs": None}]},
                    {"choices": [{"content_filter_results": {}, "delta": {}, "finish_reason": "tool_calls",
                                  "index": 0, "logprobs": None}]},
                ]
                return await self._stream(request, deployment, body, events, usage, "chat.completion.chunk")
            message = {"role": "assistant", "content": None, "refusal": None, "tool_calls": [
                {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}]}
            choices = [{"content_filter_results": {}, "finish_reason": "tool_calls", "index": 0, "logprobs": None,
                        "message": message}]
        else:
            fmt = body.get("response_format") or {}
            if "cut-mid-stream" in deployment:
                text = CUT_TEXT
            elif last.get("role") == "tool":
                text = f"tool said: {content_text(last.get('content'))}"
            elif fmt.get("type") == "json_schema":
                text = json.dumps(instance_for((fmt.get("json_schema") or {}).get("schema") or {}))
            elif fmt.get("type") == "json_object":
                text = json.dumps({"ok": True, "echo": last_text(messages)})
            else:
                text = f"echo: {last_text(messages)}"
            text = apply_stop(text, body.get("stop"))
            limit = 3 if "max-tokens" in deployment else body.get("max_completion_tokens", body.get("max_tokens"))
            words, cut = apply_limit(split_words(text), limit)
            finish = "length" if cut else "stop"
            if filtered:
                words, finish = words[:2], "content_filter"
            usage = self._usage(prompt, len(words))
            if body.get("stream") is True:
                events = [{"choices": [{"content_filter_results": {}, "delta": {
                    "content": "", "refusal": None, "role": "assistant"}, "finish_reason": None, "index": 0,
                    "logprobs": None}]}]
                events += [{"choices": [{"content_filter_results": _FILTERS, "delta": {"content": w},
                                         "finish_reason": None, "index": 0, "logprobs": None}]} for w in words]
                if filtered:  # asynchronous filter: an annotation-only choice, then the cut
                    events.append({"choices": [{"content_filter_offsets": {"check_offset": 0, "start_offset": 0,
                                                                            "end_offset": 12},
                                                "content_filter_results": _FLAGGED, "finish_reason": None,
                                                "index": 0}]})
                events.append({"choices": [{"content_filter_results": _FLAGGED if filtered else {}, "delta": {},
                                            "finish_reason": finish, "index": 0, "logprobs": None}]})
                return await self._stream(request, deployment, body, events, usage, "chat.completion.chunk")
            message = {"role": "assistant", "content": None if filtered else "".join(words), "refusal": None}
            choices = [{"content_filter_results": _FLAGGED if filtered else _FILTERS, "finish_reason": finish,
                        "index": 0, "logprobs": None, "message": message}]
        resp = {**self._head(deployment, "chatcmpl", "chat.completion"), "choices": choices,
                "prompt_filter_results": _PROMPT_FILTERS, "usage": usage}
        return web.json_response(resp)

    # ---------------------------------------------------------- completions
    async def _completions(self, request: web.Request) -> web.StreamResponse:
        got = await self._prelude(request, "prompt")
        if isinstance(got, web.Response):
            return got
        deployment, body = got
        prompt = body["prompt"] if isinstance(body["prompt"], str) else " ".join(map(str, body["prompt"]))
        words, cut = apply_limit(split_words(apply_stop(f"echo: {prompt}", body.get("stop"))), body.get("max_tokens"))
        finish = "length" if cut else "stop"
        usage = self._usage(max(len(prompt.split()), 1), len(words))
        if body.get("stream") is True:
            events = [{"choices": [{"content_filter_results": _FILTERS, "text": w, "index": 0, "logprobs": None,
                                    "finish_reason": None}]} for w in words]
            events.append({"choices": [{"content_filter_results": {}, "text": "", "index": 0, "logprobs": None,
                                        "finish_reason": finish}]})
            return await self._stream(request, deployment, body, events, usage, "text_completion")
        resp = {**self._head(deployment, "cmpl", "text_completion"), "prompt_filter_results": _PROMPT_FILTERS,
                "choices": [{"text": "".join(words), "index": 0, "logprobs": None, "finish_reason": finish,
                             "content_filter_results": _FILTERS}], "usage": usage}
        return web.json_response(resp)

    # ----------------------------------------------------------- embeddings
    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        got = await self._prelude(request, "input")
        if isinstance(got, web.Response):
            return got
        deployment, body = got
        raw = body["input"]
        inputs = [raw] if isinstance(raw, str) or (raw and isinstance(raw[0], int)) else list(raw)
        dims = body.get("dimensions") or 8
        data = [{"object": "embedding", "index": i, "embedding": embedding(x if isinstance(x, str) else json.dumps(x),
                                                                            dims)} for i, x in enumerate(inputs)]
        tokens = sum(max(len(x.split()), 1) if isinstance(x, str) else len(x) for x in inputs)
        return web.json_response({"object": "list", "data": data,
                                  "model": self._model(deployment, "text-embedding-3-small"),
                                  "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    # --------------------------------------------------------------- models
    async def _responses(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            return azure_error(400, "BadRequest", "Missing required parameter: 'model'.")
        deployed = {**body, "model": self._model(body["model"]).rsplit("-", 3)[0]}  # the fake names it dated
        history = self.responses_api.history(body.get("previous_response_id"))
        if history is None:
            return azure_error(400, "previous_response_not_found", "Previous response not found.")
        if body.get("stream") is True:
            return await self.stream(request, self.responses_api.events(deployed, history), content_type=RESPONSES_SSE)
        return web.json_response(self.responses_api.whole(deployed, history))

    async def _get_response(self, request: web.Request) -> web.Response:
        found = self.responses_api.stored.get(request.match_info["response_id"])
        return web.json_response(found["response"]) if found else azure_error(404, "404", "Resource not found")

    async def _models(self, request: web.Request) -> web.Response:
        data = [{"id": m, "object": "model", "status": "succeeded", "created_at": 1723075200,
                 "capabilities": {"chat_completion": "embedding" not in m, "completion": False,
                                  "embeddings": "embedding" in m, "fine_tune": False, "inference": True},
                 "lifecycle_status": "generally-available",
                 "deprecation": {"inference": 1782864000}} for m in MODELS]
        return web.json_response({"data": data, "object": "list"})
