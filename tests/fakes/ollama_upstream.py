"""A fake Ollama server speaking Ollama's native API (``/api/chat``, ``/api/generate``,
``/api/embed``, ``/api/embeddings``, ``/api/tags``, ``/api/ps``, ``/api/show``, ``/api/pull``,
``/api/version``).  Like real Ollama it streams NDJSON unless ``"stream": false``.

An empty prompt (``/api/generate``) or message list (``/api/chat``) loads the model into the
``/api/ps`` list for ``keep_alive`` (default 5m, negative: for ever); ``keep_alive`` 0 unloads it.
``/api/pull`` streams progress as real Ollama does (``pulling manifest``, per layer ``pulling
<digest>`` with ``total``/``completed``, ``verifying sha256 digest``, ``writing manifest``,
``success``); the model is then listed by ``/api/tags``.  A model not in ``library`` (default:
every name except those starting with ``missing``) fails after ``pulling manifest`` with real
Ollama's ``{"error": "pull model manifest: file does not exist"}`` line; ``fail-mid-stream``
is cut off after 3 progress lines.

Knobs selected by the request's ``model`` (always accepted, whatever ``models`` says):
``slow-stream`` (50 chunks 0.2 s apart), ``fail-mid-stream`` (3 chunks, then the TCP
connection is aborted), ``slow`` (5 s before answering), ``error-400|401|429|500|503``
(``{"error": ...}`` bodies; 429 has ``Retry-After: 7``, 503 ``Retry-After: 3``).

``/api/chat``'s ``think`` works as in real Ollama: ``true`` or a level makes the answer carry
``message.thinking`` (streamed first, a word a line) and ``false`` leaves it out. A model whose
name has ``no-think`` answers ``think: true`` with real Ollama's 400 ``"<model>" does not support
thinking``; a level (low/medium/high) is only taken by ``gpt-oss`` models (a 400 otherwise).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
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

Responder = Callable[[dict[str, Any]], str]
NDJSON = "application/x-ndjson"

SLOW_STREAM_TEXT = " ".join(f"tick{i}" for i in range(50))
FAIL_TEXT = "this stream will be cut off after three chunks, never to finish"
THINKING_TEXT = "The user wants an echo, so I echo."
ERRORS: dict[str, tuple[int, str, dict[str, str]]] = {
    "error-400": (400, "invalid options: temperature must be a number", {}),
    "error-401": (401, "unauthorized", {}),
    "error-429": (429, "too many requests", {"Retry-After": "7"}),
    "error-500": (500, "llama runner process has terminated: exit status 2", {}),
    "error-503": (503, "server busy, please try again.  maximum pending requests exceeded", {"Retry-After": "3"}),
}
BEHAVIOURS = {"slow-stream", "fail-mid-stream", "slow", *ERRORS}
_DURATION = re.compile(r"^(-?\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)?$")
_NO_MANIFEST = "pull model manifest: file does not exist"
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600, None: 1}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _full_name(name: str) -> str:
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def _keep_alive_seconds(value: Any) -> float:
    """Ollama's ``keep_alive``: seconds as a number, or a Go duration such as ``"5m"``."""
    if value is None:
        return 300.0
    if isinstance(value, int | float):
        return float(value)
    match = _DURATION.match(str(value).strip())
    return float(match[1]) * _UNITS[match[2]] if match else 300.0


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


class _Bad(Exception):
    def __init__(self, response: web.Response) -> None:
        self.response = response


class FakeOllama(FakeServer):
    """Fake Ollama on 127.0.0.1.  ``models`` empty (the default) accepts every model name."""

    def __init__(self, *, models: list[str] | None = None, responder: Responder | None = None,
                 tool_arguments: dict[str, Any] | None = None, version: str = "0.12.6",
                 library: list[str] | None = None, pull_delay: float = 0.0) -> None:
        super().__init__()
        self.models = list(models or [])
        self.responder = responder
        self.tool_arguments = {"city": "Paris"} if tool_arguments is None else tool_arguments
        self.version = version
        self.loaded: dict[str, float] = {}  # full model name -> expiry (time.time()), for /api/ps
        self.library = None if library is None else [_full_name(m) for m in library]  # what /api/pull finds
        self.pulled: list[str] = []  # full names pulled so far, listed by /api/tags after ``models``
        self.pull_delay = pull_delay  # seconds between /api/pull progress lines

    @property
    def base_url(self) -> str:
        return self.url

    def _routes(self, app: web.Application) -> None:
        app.router.add_post("/api/chat", self._chat)
        app.router.add_post("/api/generate", self._generate)
        app.router.add_post("/api/embed", self._embed)
        app.router.add_post("/api/embeddings", self._embeddings_legacy)
        app.router.add_post("/api/show", self._show)
        app.router.add_post("/api/pull", self._pull)
        app.router.add_get("/api/tags", self._tags)
        app.router.add_get("/api/ps", self._ps)
        app.router.add_get("/api/version", self._version)
        app.router.add_get("/", self._root)
        app.router.add_route("*", "/{tail:.*}", self._not_found)

    async def _root(self, request: web.Request) -> web.Response:
        return web.Response(text="Ollama is running")

    async def _not_found(self, request: web.Request) -> web.Response:
        return web.Response(status=404, text="404 page not found")

    def _known(self, name: str) -> bool:
        if not self.models or name in BEHAVIOURS:
            return True
        return _full_name(name) in {*(_full_name(m) for m in self.models), *self.pulled}

    async def _prelude(self, request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            raise _Bad(error_response(400, "invalid character in request body")) from None
        if not isinstance(body, dict):
            raise _Bad(error_response(400, "json: cannot unmarshal into Go value of type api.Request"))
        model = body.get("model")
        if not model:
            raise _Bad(error_response(400, "model is required"))
        if model in ERRORS:
            status, message, headers = ERRORS[model]
            raise _Bad(error_response(status, message, headers))
        if not self._known(model):
            raise _Bad(error_response(404, f'model "{model}" not found, try pulling it first'))
        if model == "slow":
            await self.slow(5.0)
        ttl = _keep_alive_seconds(body.get("keep_alive"))
        if ttl == 0:
            self.loaded.pop(_full_name(model), None)
        else:
            self.loaded[_full_name(model)] = time.time() + (ttl if ttl > 0 else 10 * 365 * 86400)
        return body

    @staticmethod
    def _metrics(prompt_tokens: int, eval_count: int) -> dict[str, int]:
        load, prompt_ns, eval_ns = 1_500_000, prompt_tokens * 1_000_000, eval_count * 20_000_000
        return {"total_duration": load + prompt_ns + eval_ns + 250_000, "load_duration": load,
                "prompt_eval_count": prompt_tokens, "prompt_eval_duration": prompt_ns,
                "eval_count": eval_count, "eval_duration": eval_ns}

    def _text(self, body: dict[str, Any], default: str) -> str:
        model, fmt = body["model"], body.get("format")
        if model == "slow-stream":
            return SLOW_STREAM_TEXT
        if model == "fail-mid-stream":
            return FAIL_TEXT
        if fmt == "json":
            return json.dumps({"ok": True, "echo": default})
        if isinstance(fmt, dict):
            return json.dumps(instance_for(fmt))
        if self.responder is not None:
            return self.responder(body)
        return f"echo: {default}"

    def _words(self, body: dict[str, Any], text: str) -> tuple[list[str], str]:
        options = body.get("options") or {}
        words, cut = apply_limit(split_words(apply_stop(text, options.get("stop"))), options.get("num_predict"))
        return words, "length" if cut else "stop"

    async def _reply(self, request: web.Request, body: dict[str, Any], parts: list[dict[str, Any]],
                     final: dict[str, Any], whole: dict[str, Any]) -> web.StreamResponse:
        """Send ``whole`` as one JSON object, or stream ``parts`` + ``final`` as NDJSON."""
        head = {"model": body["model"], "created_at": _now()}
        if body.get("stream") is False:
            return web.json_response({**head, **whole})

        def lines() -> Iterator[bytes]:
            for part in [*parts, final]:
                line = json.dumps({"model": body["model"], "created_at": _now(), **part}, separators=(",", ":"))
                yield f"{line}\n".encode()

        return await self.stream(request, lines(), content_type=NDJSON,
                                 delay=0.2 if body["model"] == "slow-stream" else 0.0,
                                 cut_after=3 if body["model"] == "fail-mid-stream" else None)

    # ------------------------------------------------------------------- chat
    async def _chat(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await self._prelude(request)
        except _Bad as bad:
            return bad.response
        messages = body.get("messages") or []
        if not messages:  # Ollama loads (or with keep_alive 0, unloads) the model
            reason = "unload" if _keep_alive_seconds(body.get("keep_alive")) == 0 else "load"
            return web.json_response({"model": body["model"], "created_at": _now(),
                                      "message": {"role": "assistant", "content": ""},
                                      "done_reason": reason, "done": True})
        think = body.get("think")
        if think not in (None, True, False, "low", "medium", "high"):
            return error_response(400, f"invalid think value: {think!r}")
        if think and "no-think" in body["model"]:
            return error_response(400, f'"{body["model"]}" does not support thinking')
        if isinstance(think, str) and "gpt-oss" not in body["model"]:
            return error_response(400, f'think value "{think}" is not supported for this model')
        last = messages[-1] if isinstance(messages[-1], dict) else {}
        tools = [t for t in body.get("tools") or [] if isinstance(t, dict) and t.get("function")]
        prompt_tokens = count_words(messages)
        msg: dict[str, Any] = {"role": "assistant", "content": ""}
        if tools and last.get("role") != "tool":
            calls = [{"function": {"name": tools[0]["function"]["name"], "arguments": dict(self.tool_arguments)}}]
            parts = [{"message": {**msg, "tool_calls": calls}, "done": False}]
            whole_msg, reason = {**msg, "tool_calls": calls}, "stop"
            eval_count = len(json.dumps(self.tool_arguments)) // 4
        else:
            if last.get("role") == "tool":
                text = f"tool said: {content_text(last.get('content'))}"
            else:
                text = self._text(body, last_text(messages))
            words, reason = self._words(body, text)
            parts = [{"message": {"role": "assistant", "content": w}, "done": False} for w in words]
            whole_msg, eval_count = {**msg, "content": "".join(words)}, len(words)
        if think:
            thought = split_words(THINKING_TEXT)
            parts = [{"message": {"role": "assistant", "content": "", "thinking": w}, "done": False}
                     for w in thought] + parts
            whole_msg = {**whole_msg, "thinking": THINKING_TEXT}
            eval_count += len(thought)
        metrics = self._metrics(prompt_tokens, max(eval_count, 1))
        final = {"message": msg, "done_reason": reason, "done": True, **metrics}
        whole = {"message": whole_msg, "done_reason": reason, "done": True, **metrics}
        return await self._reply(request, body, parts, final, whole)

    # --------------------------------------------------------------- generate
    async def _generate(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await self._prelude(request)
        except _Bad as bad:
            return bad.response
        prompt = body.get("prompt") or ""
        if not prompt:
            reason = "unload" if _keep_alive_seconds(body.get("keep_alive")) == 0 else "load"
            return web.json_response({"model": body["model"], "created_at": _now(), "response": "",
                                      "done": True, "done_reason": reason})
        words, reason = self._words(body, self._text(body, prompt))
        prompt_tokens = max(len(prompt.split()) + len(str(body.get("system") or "").split()), 1)
        metrics = self._metrics(prompt_tokens, max(len(words), 1))
        tail = {"done": True, "done_reason": reason, "context": [1, 2, 3], **metrics}
        parts = [{"response": w, "done": False} for w in words]
        return await self._reply(request, body, parts, {"response": "", **tail},
                                 {"response": "".join(words), **tail})

    # ------------------------------------------------------------- embeddings
    async def _embed(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await self._prelude(request)
        except _Bad as bad:
            return bad.response
        raw = body.get("input")
        inputs = [raw] if isinstance(raw, str) else raw if isinstance(raw, list) else []
        if raw is not None and not all(isinstance(x, str) for x in inputs):
            return error_response(400, "invalid input type")
        dims = body.get("dimensions") or 8
        tokens = sum(max(len(x.split()), 1) for x in inputs)
        return web.json_response({
            "model": body["model"], "embeddings": [embedding(x, dims) for x in inputs],
            "total_duration": 14_000_000, "load_duration": 1_000_000, "prompt_eval_count": tokens,
        })

    async def _embeddings_legacy(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await self._prelude(request)
        except _Bad as bad:
            return bad.response
        prompt = body.get("prompt") or ""
        return web.json_response({"embedding": embedding(prompt, body.get("dimensions") or 8) if prompt else []})

    # ----------------------------------------------------------------- models
    @staticmethod
    def _details(name: str) -> dict[str, Any]:
        embed = "embed" in name or "minilm" in name
        family = "bert" if embed else "llama"
        return {"parent_model": "", "format": "gguf", "family": family, "families": [family],
                "parameter_size": "137M" if embed else "3.2B",
                "quantization_level": "F16" if embed else "Q4_K_M"}

    @staticmethod
    def _digest(name: str) -> str:
        return hashlib.sha256(name.encode()).hexdigest()

    async def _tags(self, request: web.Request) -> web.Response:
        models = []
        names = [_full_name(m) for m in self.models]
        for name in [*names, *(p for p in self.pulled if p not in names)]:
            size = sum(total for _, total in self._layers(name)) if name in self.pulled else 2_019_393_189
            models.append({"name": name, "model": name, "modified_at": "2025-01-01T12:00:00.000000Z",
                           "size": size, "digest": self._digest(name), "details": self._details(name)})
        return web.json_response({"models": models})

    # ------------------------------------------------------------------- pull
    def _layers(self, name: str) -> list[tuple[str, int]]:
        """(sha256 hex, bytes) of each blob of a model: the weights, then template, license, params."""
        weights = 100_000_000 + int(self._digest(name)[:6], 16) * 10
        return [(self._digest(f"{name}#{part}"), size)
                for part, size in (("weights", weights), ("template", 1_482), ("license", 11_343), ("params", 120))]

    def _pullable(self, name: str) -> bool:
        if name == "fail-mid-stream":
            return True
        if self.library is not None:
            return _full_name(name) in self.library
        return not name.startswith("missing")

    def _progress(self, name: str) -> Iterator[dict[str, Any]]:
        yield {"status": "pulling manifest"}
        if not self._pullable(name):
            yield {"error": _NO_MANIFEST}
            return
        for digest, total in self._layers(name):
            head = {"status": f"pulling {digest[:12]}", "digest": f"sha256:{digest}", "total": total}
            yield head  # like Go's omitempty, "completed" is absent while it is 0
            steps = 4 if total > 1_000_000 else 1
            for step in range(1, steps + 1):
                yield {**head, "completed": total * step // steps}
        yield {"status": "verifying sha256 digest"}
        yield {"status": "writing manifest"}
        full = _full_name(name)
        if full not in self.pulled:
            self.pulled.append(full)
        yield {"status": "success"}

    async def _pull(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            return error_response(400, "invalid character in request body")
        if not isinstance(body, dict):
            return error_response(400, "json: cannot unmarshal into Go value of type api.PullRequest")
        name = str(body.get("model") or body.get("name") or "").strip()
        if not name or " " in name or name.startswith((":", "/")):
            return error_response(400, "invalid model name")
        if body.get("stream") is False:
            last: dict[str, Any] = {}
            for last in self._progress(name):
                if "error" in last:
                    return error_response(500, str(last["error"]))
            return web.json_response(last)
        lines = (f"{json.dumps(p, separators=(',', ':'))}\n".encode() for p in self._progress(name))
        return await self.stream(request, lines, content_type=NDJSON, delay=self.pull_delay,
                                 cut_after=3 if name == "fail-mid-stream" else None)

    async def _ps(self, request: web.Request) -> web.Response:
        now = time.time()
        models = []
        for name, expires in sorted(self.loaded.items()):
            if expires <= now:
                continue
            expires_at = (datetime.now(UTC) + timedelta(seconds=expires - now)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            models.append({"name": name, "model": name, "size": 3_200_000_000, "digest": self._digest(name),
                           "details": self._details(name), "expires_at": expires_at,
                           "size_vram": 3_200_000_000, "context_length": 4096})
        return web.json_response({"models": models})

    async def _show(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            body = {}
        name = (body or {}).get("model") or (body or {}).get("name") or ""
        if not name or not self._known(name):
            return error_response(404, f"model '{name}' not found")
        details = self._details(name)
        embed = details["family"] == "bert"
        return web.json_response({
            "modelfile": f"FROM {_full_name(name)}\n", "parameters": "", "template": "{{ .Prompt }}",
            "details": details, "modified_at": "2025-01-01T12:00:00.000000Z",
            "model_info": {"general.architecture": details["family"], f"{details['family']}.context_length": 8192},
            "capabilities": ["embedding"] if embed else ["completion", "tools"],
        })

    async def _version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": self.version})
