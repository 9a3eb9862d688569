"""A fake Google Gemini API (``https://generativelanguage.googleapis.com/v1beta``) speaking the
real wire format: ``POST /v1beta/models/{model}:generateContent``, ``:streamGenerateContent``
(``?alt=sse``: ``data: {GenerateContentResponse}`` events, CRLF framed; without it, a JSON
array), ``:batchEmbedContents``, ``GET /v1beta/models`` (paginated) and ``/v1beta/models/{model}``.

Like Google it authenticates with ``x-goog-api-key`` (or ``?key=``): no key is a 403
PERMISSION_DENIED, a wrong key a 400 INVALID_ARGUMENT with reason API_KEY_INVALID. It checks
requests the way the real API does: unknown field names are a 400 ("Unknown name ..."), roles
must be user/model, parts must not be empty and hold one datum, a function response turn must
follow a function call turn with as many parts, ``responseJsonSchema`` needs a JSON mime type.

Knobs, selected by the model name containing them (any name is served):
``max-tokens`` (2 words, MAX_TOKENS), ``safety`` (SAFETY), ``recitation`` (RECITATION),
``blocked-prompt`` (promptFeedback.blockReason, no candidates), ``malformed-call``
(MALFORMED_FUNCTION_CALL; streamed 50 ms after one text chunk), ``rate-limited`` (429
RESOURCE_EXHAUSTED with RetryInfo 7s), ``server-error`` (500 INTERNAL), ``overloaded`` (503
UNAVAILABLE), ``cut-mid-stream`` (3 events, then the connection is aborted), ``thinking``
(thoughtsTokenCount, and thought signatures on function calls that must come back on replayed
calls), ``parallel`` (one call per declared function).

``generationConfig.thinkingConfig`` is checked as Google checks it (``thinkingBudget`` and
``thinkingLevel`` together are a 400; a level outside minimal/low/medium/high is a 400; a level on
a model that is not ``gemini-3*`` is a 400, as 2.5 models answer). With ``includeThoughts: true``
every candidate opens with a thought-summary part (``"thought": true``) and thoughts are counted.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from typing import Any

from aiohttp import web

from ._gen import apply_limit, apply_stop, embedding, instance_for, split_words
from ._server import FakeServer

SSE = "text/event-stream"
DEFAULT_MODELS = ["gemini-2.0-flash", "gemini-2.5-flash", "text-embedding-004"]
CUT_TEXT = "this stream will be cut off after three events and never finish"

_FIELDS: dict[str, set[str]] = {
    "request": {"contents", "systemInstruction", "tools", "toolConfig", "generationConfig", "safetySettings",
                "cachedContent", "labels"},
    "content": {"role", "parts"},
    "part": {"text", "inlineData", "fileData", "functionCall", "functionResponse", "executableCode",
             "codeExecutionResult", "thought", "thoughtSignature", "videoMetadata"},
    "functionCall": {"id", "name", "args"},
    "functionResponse": {"id", "name", "response", "willContinue", "scheduling"},
    "inlineData": {"mimeType", "data"},
    "fileData": {"mimeType", "fileUri"},
    "generationConfig": {"stopSequences", "responseMimeType", "responseSchema", "responseJsonSchema",
                         "responseModalities", "candidateCount", "maxOutputTokens", "temperature", "topP", "topK",
                         "seed", "presencePenalty", "frequencyPenalty", "responseLogprobs", "logprobs",
                         "enableEnhancedCivicAnswers", "speechConfig", "thinkingConfig", "mediaResolution"},
    "tool": {"functionDeclarations", "googleSearchRetrieval", "codeExecution", "googleSearch", "urlContext"},
    "functionDeclaration": {"name", "description", "parameters", "parametersJsonSchema", "response",
                            "responseJsonSchema", "behavior"},
    "toolConfig": {"functionCallingConfig"},
    "functionCallingConfig": {"mode", "allowedFunctionNames"},
    "thinkingConfig": {"includeThoughts", "thinkingBudget", "thinkingLevel"},
}
THOUGHT_TEXT = "**Thinking** about the request"
_LEVELS = {"THINKING_LEVEL_UNSPECIFIED", "MINIMAL", "LOW", "MEDIUM", "HIGH"}
_DATA_FIELDS = {"text", "inlineData", "fileData", "functionCall", "functionResponse", "executableCode",
                "codeExecutionResult"}
_SNAKE = re.compile(r"_([a-z])")
_RATINGS = [{"category": c, "probability": "NEGLIGIBLE"} for c in (
    "HARM_CATEGORY_HATE_SPEECH", "HARM_CATEGORY_DANGEROUS_CONTENT", "HARM_CATEGORY_HARASSMENT",
    "HARM_CATEGORY_SEXUALLY_EXPLICIT")]


def google_error(status: int, message: str, state: str, details: list[dict[str, Any]] | None = None,
                 headers: dict[str, str] | None = None) -> web.Response:
    err: dict[str, Any] = {"code": status, "message": message, "status": state}
    if details:
        err["details"] = details
    return web.json_response({"error": err}, status=status, headers=headers)


class _Bad(Exception):
    def __init__(self, response: web.Response) -> None:
        self.response = response


def _invalid(message: str) -> _Bad:
    return _Bad(google_error(400, message, "INVALID_ARGUMENT"))


def _camel(name: str) -> str:
    return _SNAKE.sub(lambda m: m[1].upper(), name)


def _check_fields(obj: Any, kind: str, where: str) -> None:
    if not isinstance(obj, dict):
        raise _invalid(f"Invalid JSON payload received. Expected an object at '{where}'.")
    for key in obj:
        if _camel(key) not in _FIELDS[kind]:
            raise _invalid(f'Invalid JSON payload received. Unknown name "{key}" at \'{where}\': Cannot find field.')


def _get(obj: dict[str, Any], name: str, default: Any = None) -> Any:
    """A field by its lowerCamel or snake_case name, as Google's JSON parser accepts both."""
    if name in obj:
        return obj[name]
    snake = re.sub(r"([A-Z])", lambda m: "_" + m[1].lower(), name)
    return obj.get(snake, default)


class FakeGemini(FakeServer):
    """Fake Gemini API on 127.0.0.1; see the module docstring."""

    def __init__(self, *, api_key: str | None = None, models: list[str] | None = None,
                 tool_arguments: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.api_key = api_key
        self.models = list(DEFAULT_MODELS if models is None else models)
        self.tool_arguments = {"city": "Paris"} if tool_arguments is None else tool_arguments
        self.signatures: set[str] = set()  # thought signatures handed out (the ``thinking`` knob)

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1beta"

    # ------------------------------------------------------------------ plumbing
    def _routes(self, app: web.Application) -> None:
        app.router.add_post("/v1beta/models/{call}", self._post_model)
        app.router.add_get("/v1beta/models", self._list_models)
        app.router.add_get("/v1beta/models/{name}", self._get_model)
        app.router.add_route("*", "/{tail:.*}", self._not_found)

    def _middlewares(self) -> list[Any]:
        return [self._record_middleware, self._auth_middleware]

    @web.middleware
    async def _auth_middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self.api_key is None:
            return await handler(request)
        key = request.headers.get("x-goog-api-key") or request.query.get("key")
        if not key:
            return google_error(
                403, "Method doesn't allow unregistered callers (callers without established identity). Please "
                "use API Key or other form of API consumer identity to call this API.", "PERMISSION_DENIED")
        if key != self.api_key:
            return google_error(400, "API key not valid. Please pass a valid API key.", "INVALID_ARGUMENT", [
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                 "domain": "googleapis.com", "metadata": {"service": "generativelanguage.googleapis.com"}},
                {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US",
                 "message": "API key not valid. Please pass a valid API key."},
            ])
        return await handler(request)

    async def _not_found(self, request: web.Request) -> web.Response:
        return web.Response(status=404, content_type="text/html",
                            text=f"<html><body>The requested URL <code>{request.path}</code> was not found on this "
                                 "server.  That's all we know.</body></html>")

    async def _post_model(self, request: web.Request) -> web.StreamResponse:
        model, _, method = request.match_info["call"].rpartition(":")
        if not model:
            return await self._not_found(request)
        try:
            body = await request.json()
        except ValueError:
            return google_error(400, "Invalid JSON payload received. Unexpected token.", "INVALID_ARGUMENT")
        try:
            self._knob_errors(model)
            if method in ("generateContent", "streamGenerateContent"):
                return await self._generate(request, model, body, stream=method == "streamGenerateContent")
            if method == "batchEmbedContents":
                return self._batch_embed(model, body)
        except _Bad as bad:
            return bad.response
        return google_error(404, f"models/{model} is not found for API version v1beta, or is not supported for "
                            f"{method}. Call ListModels to see the list of available models and their supported "
                            "methods.", "NOT_FOUND")

    @staticmethod
    def _knob_errors(model: str) -> None:
        if "rate-limited" in model:
            raise _Bad(google_error(
                429, "You exceeded your current quota, please check your plan and billing details. For more "
                "information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.",
                "RESOURCE_EXHAUSTED", [
                    {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
                        {"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                         "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"}]},
                    {"@type": "type.googleapis.com/google.rpc.Help", "links": [
                        {"description": "Learn more about Gemini API quotas",
                         "url": "https://ai.google.dev/gemini-api/docs/rate-limits"}]},
                    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"},
                ]))
        if "server-error" in model:
            raise _Bad(google_error(500, "An internal error has occurred. Please retry or report in "
                                    "https://developers.generativeai.google/guide/troubleshooting", "INTERNAL"))
        if "overloaded" in model:
            raise _Bad(google_error(503, "The model is overloaded. Please try again later.", "UNAVAILABLE"))

    # --------------------------------------------------------------- validation
    def _validate(self, model: str, body: Any) -> None:
        _check_fields(body, "request", "")
        contents = _get(body, "contents")
        if not contents:
            raise _invalid("* GenerateContentRequest.contents: contents is not specified\n")
        system = _get(body, "systemInstruction")
        if system is not None:
            _check_fields(system, "content", "system_instruction")
            for part in system.get("parts") or []:
                _check_fields(part, "part", "system_instruction.parts[0]")
        previous: dict[str, Any] | None = None
        for i, content in enumerate(contents):
            where = f"contents[{i}]"
            _check_fields(content, "content", where)
            if content.get("role", "user") not in ("user", "model"):
                raise _invalid("Please use a valid role: user, model.")
            parts = content.get("parts") or []
            if not parts:
                raise _invalid(f"* GenerateContentRequest.{where}.parts: contents.parts must not be empty.\n")
            for j, part in enumerate(parts):
                self._check_part(part, f"{where}.parts[{j}]")
            self._check_turn_order(model, content, previous)
            previous = content
        for i, tool in enumerate(_get(body, "tools") or []):
            _check_fields(tool, "tool", f"tools[{i}]")
            for j, decl in enumerate(_get(tool, "functionDeclarations") or []):
                _check_fields(decl, "functionDeclaration", f"tools[{i}].function_declarations[{j}]")
                if "parameters" in decl and _get(decl, "parametersJsonSchema") is not None:
                    raise _invalid("parameters and parameters_json_schema are mutually exclusive.")
                if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.:-]{0,63}", str(decl.get("name", ""))):
                    raise _invalid(f"* GenerateContentRequest.tools[{i}].function_declarations[{j}].name: Invalid "
                                   "function name.\n")
        config = _get(body, "toolConfig")
        if config is not None:
            _check_fields(config, "toolConfig", "tool_config")
            calling = _get(config, "functionCallingConfig") or {}
            _check_fields(calling, "functionCallingConfig", "tool_config.function_calling_config")
            if calling.get("mode", "AUTO") not in ("AUTO", "ANY", "NONE", "VALIDATED", "MODE_UNSPECIFIED"):
                raise _invalid(f"Invalid value at 'tool_config.function_calling_config.mode' ({calling['mode']})")
        gen = _get(body, "generationConfig") or {}
        _check_fields(gen, "generationConfig", "generation_config")
        if _get(gen, "responseJsonSchema") is not None and _get(gen, "responseSchema") is not None:
            raise _invalid("response_schema and response_json_schema are mutually exclusive.")
        if _get(gen, "responseJsonSchema") is not None and _get(gen, "responseMimeType") not in (
                "application/json", "text/x.enum"):
            raise _invalid("response_mime_type must be application/json when response_json_schema is set.")
        thinking = _get(gen, "thinkingConfig")
        if thinking is not None:
            self._check_thinking(model, thinking)
        count = _get(gen, "candidateCount", 1)
        if not isinstance(count, int) or not 1 <= count <= 8:
            raise _invalid("* GenerateContentRequest.generation_config.candidate_count: must be between 1 and 8.\n")

    @staticmethod
    def _check_thinking(model: str, thinking: Any) -> None:
        _check_fields(thinking, "thinkingConfig", "generation_config.thinking_config")
        level = _get(thinking, "thinkingLevel")
        budget = _get(thinking, "thinkingBudget")
        if level is not None and budget is not None:
            raise _invalid("thinking_budget and thinking_level are not supported together.")
        if level is not None and str(level).upper() not in _LEVELS:
            raise _invalid(f"Invalid value at 'generation_config.thinking_config.thinking_level' ({level})")
        if level is not None and not model.startswith("gemini-3"):
            raise _invalid("Thinking level is not supported for this model.")
        if budget is not None and (not isinstance(budget, int) or budget < -1 or budget > 32768):
            raise _invalid("The thinking budget is out of range.")

    @staticmethod
    def _check_part(part: Any, where: str) -> None:
        _check_fields(part, "part", where)
        data = [k for k in part if _camel(k) in _DATA_FIELDS]
        if len(data) != 1:
            raise _invalid(f"* GenerateContentRequest.{where}.data: required oneof field 'data' must have one "
                           "initialized field\n")
        call = _get(part, "functionCall")
        if call is not None:
            _check_fields(call, "functionCall", f"{where}.function_call")
            if not isinstance(call.get("args", {}), dict):
                raise _invalid(f"Invalid value at '{where}.function_call.args' (type.googleapis.com/"
                               "google.protobuf.Struct)")
        answer = _get(part, "functionResponse")
        if answer is not None:
            _check_fields(answer, "functionResponse", f"{where}.function_response")
            if not isinstance(answer.get("response"), dict):
                raise _invalid(f"Invalid value at '{where}.function_response.response' (type.googleapis.com/"
                               "google.protobuf.Struct)")
        blob = _get(part, "inlineData")
        if blob is not None:
            _check_fields(blob, "inlineData", f"{where}.inline_data")
            if not blob.get("mimeType") and not blob.get("mime_type"):
                raise _invalid(f"* GenerateContentRequest.{where}.inline_data.mime_type: required field missing.\n")

    def _check_turn_order(self, model: str, content: dict[str, Any], previous: dict[str, Any] | None) -> None:
        parts = content["parts"]
        answers = [p for p in parts if _get(p, "functionResponse") is not None]
        calls = [p for p in parts if _get(p, "functionCall") is not None]
        before = [p for p in (previous or {}).get("parts") or [] if _get(p, "functionCall") is not None]
        if answers:
            if previous is None or previous.get("role") != "model" or not before:
                raise _invalid("Please ensure that function response turn comes immediately after a function call "
                               "turn.")
            if len(answers) != len(before):
                raise _invalid("Please ensure that the number of function response parts is equal to the number of "
                               "function call parts of the function call turn.")
        if calls:
            if previous is None or previous.get("role", "user") != "user":
                raise _invalid("Please ensure that function call turn comes immediately after a user turn or after "
                               "a function response turn.")
            if "thinking" in model and _get(calls[0], "thoughtSignature") not in self.signatures:
                name = _get(calls[0], "functionCall").get("name")
                raise _invalid("Function call is missing a thought_signature in functionCall parts. This is "
                               "required for tools to work correctly, and missing thought_signature may lead to "
                               f"degraded model performance. Additional data, function call `default_api:{name}` ,"
                               " position 2. Please refer to https://ai.google.dev/gemini-api/docs/thought-"
                               "signature for more details.")

    # --------------------------------------------------------------- generation
    @staticmethod
    def _text_of(parts: list[dict[str, Any]]) -> str:
        return " ".join(p["text"] for p in parts if isinstance(p.get("text"), str))

    def _prompt_tokens(self, body: dict[str, Any]) -> int:
        total = 0
        for content in [*_get(body, "contents"), _get(body, "systemInstruction") or {}]:
            total += len(self._text_of(content.get("parts") or []).split())
        return max(total, 1)

    def _plan(self, model: str, body: dict[str, Any]) -> tuple[str, Any]:
        """('calls', [(name, args)]) or ('text', text)."""
        contents = _get(body, "contents")
        last_parts = contents[-1].get("parts") or []
        answers = [_get(p, "functionResponse") for p in last_parts if _get(p, "functionResponse") is not None]
        declarations = [d for t in _get(body, "tools") or [] for d in _get(t, "functionDeclarations") or []]
        calling = _get(_get(body, "toolConfig") or {}, "functionCallingConfig") or {}
        mode = calling.get("mode", "AUTO")
        if declarations and mode != "NONE" and not answers:
            allowed = _get(calling, "allowedFunctionNames") or []
            names = [d["name"] for d in declarations] if "parallel" in model else [
                allowed[0] if mode == "ANY" and allowed else declarations[0]["name"]]
            return "calls", [(name, dict(self.tool_arguments)) for name in names]
        gen = _get(body, "generationConfig") or {}
        last_user = next((c for c in reversed(contents) if c.get("role", "user") == "user"), contents[-1])
        if answers:
            outputs = [a["response"].get("output", json.dumps(a["response"], sort_keys=True)) for a in answers]
            return "text", "tool said: " + "; ".join(str(o) for o in outputs)
        if "cut-mid-stream" in model:
            return "text", CUT_TEXT
        if _get(gen, "responseMimeType") == "application/json":
            schema = _get(gen, "responseJsonSchema")
            if schema is not None:
                return "text", json.dumps(instance_for(schema))
            return "text", json.dumps({"ok": True, "echo": self._text_of(last_user.get("parts") or [])})
        return "text", f"echo: {self._text_of(last_user.get('parts') or [])}"

    def _call_parts(self, model: str, calls: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
        parts = []
        for k, (name, args) in enumerate(calls):
            part: dict[str, Any] = {"functionCall": {"name": name, "args": args}}
            if "thinking" in model and k == 0:
                signature = "sig" + secrets.token_urlsafe(24)
                self.signatures.add(signature)
                part["thoughtSignature"] = signature
            parts.append(part)
        return parts

    @staticmethod
    def _usage(prompt: int, completion: int, thoughts: int = 0) -> dict[str, Any]:
        usage: dict[str, Any] = {"promptTokenCount": prompt, "candidatesTokenCount": completion,
                                 "totalTokenCount": prompt + completion + thoughts,
                                 "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}]}
        if thoughts:
            usage["thoughtsTokenCount"] = thoughts
        return usage

    async def _generate(self, request: web.Request, model: str, body: Any, *, stream: bool) -> web.StreamResponse:
        self._validate(model, body)
        gen = _get(body, "generationConfig") or {}
        prompt = self._prompt_tokens(body)
        head = {"modelVersion": model, "responseId": secrets.token_urlsafe(16)}
        include = bool(_get(_get(gen, "thinkingConfig") or {}, "includeThoughts"))
        thoughts = 12 if "thinking" in model or include else 0
        if "blocked-prompt" in model:
            blocked = {"promptFeedback": {"blockReason": "SAFETY", "safetyRatings": [
                {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True}]},
                "usageMetadata": {"promptTokenCount": prompt, "totalTokenCount": prompt}, **head}
            return await self._send(request, [blocked], stream=stream, model=model)
        kind, plan = self._plan(model, body)
        n = _get(gen, "candidateCount", 1)
        # per candidate: a list of (parts, finishReason) events
        per_candidate: list[list[tuple[list[dict[str, Any]], str | None]]] = []
        completion = 0
        for _ in range(n):
            events: list[tuple[list[dict[str, Any]], str | None]] = []
            if include:
                events.append(([{"text": THOUGHT_TEXT, "thought": True}], None))
            if "malformed-call" in model:
                events.append(([{"text": "Let me check."}], None))
                events.append(([], "MALFORMED_FUNCTION_CALL"))
            elif kind == "calls":
                events.append((self._call_parts(model, plan), "STOP"))
                completion += 3 * len(plan)
            else:
                text = apply_stop(plan, _get(gen, "stopSequences"))
                limit = 2 if "max-tokens" in model else _get(gen, "maxOutputTokens")
                words, cut = apply_limit(split_words(text), limit)
                finish = "MAX_TOKENS" if cut else "STOP"
                if "safety" in model:
                    words, finish = words[:2], "SAFETY"
                elif "recitation" in model:
                    words, finish = words[:2], "RECITATION"
                completion += len(words)
                if not stream:
                    events.append(([{"text": "".join(words)}] if words else [], finish))
                else:
                    events += [([{"text": word}], None) for word in words]
                    if words and finish in ("STOP", "MAX_TOKENS"):
                        events[-1] = (events[-1][0], finish)  # the last text rides with the finishReason
                    else:
                        events.append(([], finish))
            per_candidate.append(events)
        responses = list(self._responses(per_candidate, head, prompt, completion, thoughts, stream))
        return await self._send(request, responses, stream=stream, model=model)

    def _responses(self, per_candidate: list[list[tuple[list[dict[str, Any]], str | None]]], head: dict[str, Any],
                   prompt: int, completion: int, thoughts: int, stream: bool) -> Iterator[dict[str, Any]]:
        if not stream:  # one response: each candidate's parts merged
            candidates = []
            for i, events in enumerate(per_candidate):
                parts = [p for ps, _ in events for p in ps]
                cand: dict[str, Any] = {"index": i, "finishReason": events[-1][1]}
                if parts:
                    cand["content"] = {"parts": parts, "role": "model"}
                if cand["finishReason"] in ("SAFETY", "RECITATION"):
                    cand["safetyRatings"] = _RATINGS
                if cand["finishReason"] == "SAFETY":  # a whole blocked answer comes without content
                    cand.pop("content", None)
                if cand["finishReason"] == "MALFORMED_FUNCTION_CALL":
                    cand.pop("content", None)
                    cand["finishMessage"] = "Malformed function call: print(default_api.get_weather(city=Paris"
                candidates.append(cand)
            yield {"candidates": candidates, "usageMetadata": self._usage(prompt, completion, thoughts), **head}
            return
        longest = max(len(e) for e in per_candidate)
        for step in range(longest):
            candidates = []
            finished = False
            for i, events in enumerate(per_candidate):
                if step >= len(events):
                    continue
                parts, finish = events[step]
                cand = {"index": i}
                if parts:
                    cand["content"] = {"parts": parts, "role": "model"}
                if finish:
                    cand["finishReason"] = finish
                    finished = True
                candidates.append(cand)
            last = step == longest - 1
            usage = self._usage(prompt, completion, thoughts) if last or finished else {
                "promptTokenCount": prompt, "totalTokenCount": prompt}
            yield {"candidates": candidates, "usageMetadata": usage, **head}

    async def _send(self, request: web.Request, responses: list[dict[str, Any]], *, stream: bool,
                    model: str) -> web.StreamResponse:
        if not stream:
            return web.json_response(responses[0])
        if request.query.get("alt") != "sse":
            return web.json_response(responses)
        events = [b"data: " + json.dumps(r, separators=(",", ":")).encode() + b"\r\n\r\n" for r in responses]
        return await self.stream(request, events, content_type=SSE, delay=0.05 if "malformed-call" in model else 0.0,
                                 cut_after=3 if "cut-mid-stream" in model else None)

    # --------------------------------------------------------------- embeddings
    def _batch_embed(self, model: str, body: Any) -> web.Response:
        if not isinstance(body, dict):
            raise _invalid("Invalid JSON payload received. Expected an object.")
        for key in set(body) - {"requests"}:
            raise _invalid(f'Invalid JSON payload received. Unknown name "{key}": Cannot find field.')
        requests = body.get("requests") or []
        if not requests:
            raise _invalid("* BatchEmbedContentsRequest.requests: requests is not specified\n")
        out = []
        for i, req in enumerate(requests):
            if req.get("model") != f"models/{model}":
                raise _invalid(f"* BatchEmbedContentsRequest.requests[{i}].model: The model in the request "
                               "must match the model in the batch.\n")
            unknown = set(req) - {"model", "content", "taskType", "title", "outputDimensionality"}
            if unknown:
                raise _invalid(f'Invalid JSON payload received. Unknown name "{unknown.pop()}" at '
                               f"'requests[{i}]': Cannot find field.")
            text = self._text_of((req.get("content") or {}).get("parts") or [])
            out.append({"values": embedding(text, req.get("outputDimensionality") or 8)})
        return web.json_response({"embeddings": out})

    # ------------------------------------------------------------------- models
    @staticmethod
    def _model(name: str) -> dict[str, Any]:
        embed = "embedding" in name
        return {"name": f"models/{name}", "version": "001", "displayName": name, "description": f"Fake {name}",
                "inputTokenLimit": 2048 if embed else 1048576, "outputTokenLimit": 1 if embed else 8192,
                "supportedGenerationMethods": ["embedContent", "batchEmbedContents"] if embed else [
                    "generateContent", "countTokens", "createCachedContent", "batchGenerateContent"]}

    async def _list_models(self, request: web.Request) -> web.Response:
        size = int(request.query.get("pageSize") or 50)
        start = int(request.query.get("pageToken") or 0)
        page = self.models[start : start + size]
        out: dict[str, Any] = {"models": [self._model(m) for m in page]}
        if start + size < len(self.models):
            out["nextPageToken"] = str(start + size)
        return web.json_response(out)

    async def _get_model(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self.models:
            return google_error(404, f"models/{name} is not found for API version v1beta, or is not supported "
                                "for getModel.", "NOT_FOUND")
        return web.json_response(self._model(name))
