"""The Provider for local models: the same protocol as every upstream, served by the model
manager's engines. Handlers and the gateway cannot tell the difference (usage, limits, budgets,
metrics and failover all apply)."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence

import orjson

from switchyard.core.chat import ChatRequest, ChatResult, StreamPiece
from switchyard.core.embeddings import EmbeddingRequest, EmbeddingResult
from switchyard.core.models import Target
from switchyard.core.usage import Usage
from switchyard.errors import BadRequestError
from switchyard.local.engine import ChatEngine, Constraint, EmbeddingEngine
from switchyard.local.generation import TokenStream
from switchyard.local.manager import ModelManager
from switchyard.local.tools import MAX_PARALLEL_CALLS, ToolCallParser, render_messages
from switchyard.local.translate import Generation, StreamWriter, keep_alive_of, result_body, wanted

__all__ = ["LocalProvider"]

_GRAMMARS = 64  # compiled grammars kept per provider (compiling a schema can take 100 ms)


def _parser(gen: Generation) -> ToolCallParser | None:
    """What reads tool calls out of the output (None: the output is all text)."""
    if gen.tools is None or gen.tools.choice == "none":
        return None
    return ToolCallParser(text_allowed=gen.tools.choice == "auto")


class LocalProvider:
    def __init__(self, manager: ModelManager) -> None:
        self.manager = manager
        self._grammars: OrderedDict[tuple[int, bytes], object] = OrderedDict()

    async def _start(self, engine: ChatEngine, gen: Generation, target: Target,
                     owner: str | None) -> tuple[TokenStream, int]:
        if gen.messages is not None:
            plan = gen.tools
            native = engine.native_tools
            messages = render_messages(gen.messages, plan, native)
            offered = [{"type": "function", "function": dict(f)} for f in plan.functions] \
                if native and plan is not None and plan.choice != "none" else None
            prompt = await asyncio.to_thread(engine.render_chat, messages, offered)
        elif isinstance(gen.prompt, str):
            prompt = await asyncio.to_thread(engine.encode, gen.prompt)
        else:
            prompt = list(gen.prompt or [])
        model = self.manager.model(target.upstream_model)
        params = gen.params(len(prompt), engine.context_length, model.max_tokens)
        constraint = gen.constraint
        if constraint is not None and constraint.kind == "tool_calls" and model.max_tool_calls < MAX_PARALLEL_CALLS:
            constraint = Constraint("tool_calls", {**(constraint.schema or {}), "max_calls": model.max_tool_calls})
        grammar = await self._grammar(engine, constraint) if constraint is not None else None
        return TokenStream(engine, prompt, params, grammar, gen.stop, owner), len(prompt)

    async def _grammar(self, engine: ChatEngine, constraint: Constraint) -> object:
        key = (id(engine), orjson.dumps(constraint.schema, option=orjson.OPT_SORT_KEYS) + constraint.kind.encode())
        found = self._grammars.get(key)
        if found is None:
            found = await asyncio.to_thread(engine.compile, constraint)
            self._grammars[key] = found
            while len(self._grammars) > _GRAMMARS:
                self._grammars.popitem(last=False)
        else:
            self._grammars.move_to_end(key)
        return found

    def _chat_engine(self, engine: object, target: Target) -> ChatEngine:
        if not isinstance(engine, ChatEngine):
            raise BadRequestError(f"'{target.alias}' is an embedding model; use /v1/embeddings.", param="model",
                                  code="model_not_supported")
        return engine

    async def chat(self, request: ChatRequest, target: Target) -> ChatResult:
        gen = wanted(request)
        async with self.manager.lease(target.upstream_model, keep_alive_of(request.keep_alive)) as engine:
            run, prompt_tokens = await self._start(self._chat_engine(engine, target), gen, target, request.owner)
            try:
                text = "".join([piece async for piece in run])
            finally:
                await run.aclose()
        usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=run.completion_tokens)
        finish = run.finish_reason or "stop"
        parser = _parser(gen)
        if parser is None:
            return ChatResult(body=result_body(request, target.alias, text, finish, usage), usage=usage)
        parser.push(text)
        parser.close()
        return ChatResult(body=result_body(request, target.alias, "".join(parser.text), finish, usage,
                                           parser.calls), usage=usage)

    async def stream(self, request: ChatRequest, target: Target) -> AsyncIterator[StreamPiece]:
        gen = wanted(request)
        writer = StreamWriter(request, target.alias)
        async with self.manager.lease(target.upstream_model, keep_alive_of(request.keep_alive)) as engine:
            run, prompt_tokens = await self._start(self._chat_engine(engine, target), gen, target, request.owner)
            parser = _parser(gen)
            try:
                opening = writer.opening()
                async for piece in run:
                    if parser is None:
                        yield StreamPiece(data=opening + writer.text(piece), events=1)
                        opening = b""
                        continue
                    events = parser.push(piece)
                    if events:
                        yield StreamPiece(data=opening + b"".join(map(writer.tool_event, events)), events=len(events))
                        opening = b""
                finish = run.finish_reason or "stop"
                if parser is not None:
                    tail = b"".join(map(writer.tool_event, parser.close()))
                    opening += tail
                    if parser.calls and finish != "length":
                        finish = "tool_calls"
                usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=run.completion_tokens)
                yield StreamPiece(data=opening + writer.closing(finish, usage), usage=usage, done=True)
            finally:
                await run.aclose()  # a client that went away cancels the generation and frees the slot

    async def embed(self, request: EmbeddingRequest, target: Target) -> EmbeddingResult:
        texts = list(request.inputs)
        if not all(isinstance(t, str) for t in texts):
            raise BadRequestError("Local embedding models take text input, not token arrays.", param="input")
        async with self.manager.lease(target.upstream_model, keep_alive_of(request.keep_alive)) as engine:
            if not isinstance(engine, EmbeddingEngine):
                raise BadRequestError(f"'{target.alias}' is not an embedding model.", param="model",
                                      code="model_not_supported")
            if request.dimensions is not None and request.dimensions != engine.dimensions:
                raise BadRequestError(f"'{target.alias}' makes {engine.dimensions}-dimension embeddings only.",
                                      param="dimensions")
            strings = [str(t) for t in texts]
            tokens = await asyncio.to_thread(engine.count_tokens, strings)
            vectors = await asyncio.to_thread(engine.embed, strings)
        return EmbeddingResult(vectors=vectors, usage=Usage(prompt_tokens=tokens), model=target.alias)

    async def list_models(self) -> Sequence[str]:
        return self.manager.names

    async def aclose(self) -> None:
        await self.manager.aclose()
