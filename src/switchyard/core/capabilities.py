"""The capability contract: what a routed model can honour, and the check every request passes.

Each model advertises a :class:`Capabilities` in ``/v1/models`` (:meth:`Capabilities.as_json`).
A request that uses something the route cannot honour is refused with a 400 naming the
parameter, unless the model is configured to drop that parameter. Nothing is silently dropped:
what is dropped is what the operator listed, and only when it cannot be honoured.

Defaults come per provider *type* (:func:`defaults_for`) and reflect what the gateway's
translation for that provider really delivers; the configuration narrows or widens them per
model with :meth:`Capabilities.merged`. Everything here is pure: no I/O, no mutable state.

The checks every request passes against them live in :mod:`switchyard.core.contract`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from types import MappingProxyType
from typing import Any, Final, TypeGuard

__all__ = [
    "DEFAULTS",
    "DROPPABLE",
    "DROP_GROUPS",
    "RESPONSES_MODES",
    "TOOL_CHOICE_MODES",
    "UNSUPPORTED",
    "Capabilities",
    "defaults_for",
    "is_int",
    "responses_mode",
    "validate_drop",
]

TOOL_CHOICE_MODES: Final = ("auto", "none", "required", "function")
"""Every tool-choice mode, in the order :meth:`Capabilities.as_json` lists them."""

UNSUPPORTED: Final = "unsupported_parameter"

# What each ``drop`` entry removes (when, and only when, it cannot be honoured). Internal
# names: "images" = image content parts inside messages.
DROP_GROUPS: Final[Mapping[str, frozenset[str]]] = MappingProxyType({
    "tools": frozenset({"tools", "functions", "tool_choice", "function_call", "parallel_tool_calls"}),
    "functions": frozenset({"functions", "function_call"}),
    "tool_choice": frozenset({"tool_choice", "function_call"}),
    "function_call": frozenset({"function_call"}),
    "parallel_tool_calls": frozenset({"parallel_tool_calls"}),
    "response_format": frozenset({"response_format"}),
    "logprobs": frozenset({"logprobs", "top_logprobs"}),
    "top_logprobs": frozenset({"top_logprobs"}),
    "n": frozenset({"n"}),
    "best_of": frozenset({"best_of"}),
    "vision": frozenset({"images"}),
    "images": frozenset({"images"}),
})

DROPPABLE: Final = frozenset(DROP_GROUPS)
"""The names a model's ``drop`` list may hold (see :func:`validate_drop`)."""

_NEVER_DROPPABLE: Final = MappingProxyType({
    "stream": "a stream cannot be turned into a whole response",
    "messages": "the context length is a hard limit",
    "context_length": "the context length is a hard limit",
    "prompt": "the context length is a hard limit",
    "model": "it names the model",
})


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What one routed model can honour.

    ``tool_choice`` holds the honourable modes (a subset of :data:`TOOL_CHOICE_MODES`);
    without ``tools`` it is at most ``{"none"}`` and ``parallel_tool_calls`` is false; with
    ``tools`` it includes ``"auto"``. ``parallel_tool_calls`` means ``parallel_tool_calls: false``
    is enforced upstream. ``max_n`` is the largest ``n`` (1: no ``n > 1``). ``context_length``
    is in tokens, ``None`` when unknown (no check then). ``chat`` is false for a model that only
    embeds (chat and legacy completions are refused). ``max_stop`` is the longest ``stop`` list
    the upstream takes (OpenAI: 4).
    """

    tools: bool
    tool_choice: frozenset[str]
    parallel_tool_calls: bool
    json_object: bool
    json_schema: bool
    vision: bool
    logprobs: bool
    max_n: int
    context_length: int | None
    streaming: bool
    embeddings: bool
    chat: bool = True
    max_stop: int = 4

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "bool" and not isinstance(value, bool):
                raise ValueError(f"capabilities.{f.name} must be true or false, got {value!r}")
        if not isinstance(self.tool_choice, frozenset) or not self.tool_choice <= frozenset(TOOL_CHOICE_MODES):
            raise ValueError(
                f"capabilities.tool_choice must be a set of {', '.join(TOOL_CHOICE_MODES)}; got {self.tool_choice!r}"
            )
        if isinstance(self.max_n, bool) or not isinstance(self.max_n, int) or self.max_n < 1:
            raise ValueError(f"capabilities.n (max_n) must be an integer >= 1, got {self.max_n!r}")
        if isinstance(self.max_stop, bool) or not isinstance(self.max_stop, int) or self.max_stop < 1:
            raise ValueError(f"capabilities.max_stop must be an integer >= 1, got {self.max_stop!r}")
        length = self.context_length
        if length is not None and (isinstance(length, bool) or not isinstance(length, int) or length < 1):
            raise ValueError(f"capabilities.context_length must be an integer >= 1 or null, got {length!r}")
        if self.tools and "auto" not in self.tool_choice:
            raise ValueError("capabilities.tool_choice must include 'auto' when tools are supported")
        if not self.tools:
            if not self.tool_choice <= {"none"}:
                raise ValueError("capabilities.tool_choice can only be [none] or [] when tools are not supported")
            if self.parallel_tool_calls:
                raise ValueError("capabilities.parallel_tool_calls needs tools")

    @property
    def unrestricted(self) -> bool:
        """Honours everything but ``n`` beyond ``max_n``: a request without ``n`` needs no check."""
        return (self.chat and self.tools and self.parallel_tool_calls and self.json_object and self.json_schema
                and self.vision and self.logprobs and self.streaming and self.context_length is None
                and self.tool_choice == _ALL_MODES)

    def as_json(self) -> dict[str, Any]:
        """The ``capabilities`` object of a ``/v1/models`` entry (a new dict each call).

        Keys, in this order: ``tools`` (bool), ``tool_choice`` (list of modes, in
        :data:`TOOL_CHOICE_MODES` order), ``parallel_tool_calls`` (bool: ``false`` is honoured),
        ``response_format`` (list: ``"text"`` then ``"json_object"`` / ``"json_schema"`` when
        supported), ``vision``, ``logprobs`` (bools), ``n`` (the largest ``n``),
        ``context_length`` (int or null), ``streaming``, ``embeddings``, ``chat`` (bools), ``max_stop``
        (the longest ``stop`` list).
        """
        formats = ["text"]
        if self.json_object:
            formats.append("json_object")
        if self.json_schema:
            formats.append("json_schema")
        return {
            "tools": self.tools,
            "tool_choice": [mode for mode in TOOL_CHOICE_MODES if mode in self.tool_choice],
            "parallel_tool_calls": self.parallel_tool_calls,
            "response_format": formats,
            "vision": self.vision,
            "logprobs": self.logprobs,
            "n": self.max_n,
            "context_length": self.context_length,
            "streaming": self.streaming,
            "embeddings": self.embeddings,
            "chat": self.chat,
            "max_stop": self.max_stop,
        }

    def intersect(self, other: Capabilities) -> Capabilities:
        """What both honour: an alias whose deployments differ promises only what every one can do."""
        lengths = [n for n in (self.context_length, other.context_length) if n is not None]
        return Capabilities(
            tools=self.tools and other.tools,
            tool_choice=self.tool_choice & other.tool_choice,
            parallel_tool_calls=self.parallel_tool_calls and other.parallel_tool_calls,
            json_object=self.json_object and other.json_object,
            json_schema=self.json_schema and other.json_schema,
            vision=self.vision and other.vision,
            logprobs=self.logprobs and other.logprobs,
            max_n=min(self.max_n, other.max_n),
            context_length=min(lengths) if lengths else None,
            streaming=self.streaming and other.streaming,
            embeddings=self.embeddings and other.embeddings,
            chat=self.chat and other.chat,
            max_stop=min(self.max_stop, other.max_stop),
        )

    def merged(self, overrides: Mapping[str, object]) -> Capabilities:
        """These capabilities with configured overrides applied (``self`` is unchanged).

        Keys are the field names, plus the :meth:`as_json` spellings ``n`` (for ``max_n``) and
        ``response_format`` (a list of ``text``/``json_object``/``json_schema``, setting both
        ``json_object`` and ``json_schema``). ``tool_choice`` is a list of modes. Turning
        ``tools`` off also clears ``tool_choice`` (to ``[none]``) and ``parallel_tool_calls``
        unless those are given too; turning it on adds ``auto`` and ``none`` when ``auto`` is
        missing. Raises ``ValueError`` naming the offending key.
        """
        if not isinstance(overrides, Mapping):
            raise ValueError(f"capabilities must be a mapping, got {type(overrides).__name__}")
        changes: dict[str, Any] = {}
        for key, value in overrides.items():
            if not isinstance(key, str):
                raise ValueError(f"capabilities: keys must be strings, got {key!r}")
            name = "max_n" if key == "n" else key
            if name in changes or (key == "response_format" and ("json_object" in changes or "json_schema" in changes)):
                raise ValueError(f"capabilities.{key} is given twice (under two spellings)")
            if key == "response_format":
                changes.update(_formats(value))
            elif key in _BOOL_FIELDS:
                if not isinstance(value, bool):
                    raise ValueError(f"capabilities.{key} must be true or false, got {value!r}")
                if key in ("json_object", "json_schema") and "response_format" in overrides:
                    raise ValueError(f"capabilities.{key} is given twice (also under response_format)")
                changes[key] = value
            elif name in ("max_n", "max_stop"):
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise ValueError(f"capabilities.{key} must be an integer >= 1, got {value!r}")
                changes[name] = value
            elif key == "context_length":
                if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                    raise ValueError(f"capabilities.context_length must be an integer >= 1 or null, got {value!r}")
                changes[key] = value
            elif key == "tool_choice":
                changes[key] = _modes(value)
            elif key == "responses":
                responses_mode(overrides)  # how /v1/responses reaches the model: checked here, read by routing
            else:
                known = ", ".join(sorted({*_FIELD_NAMES, "n", "response_format", "responses"} - {"max_n"}))
                raise ValueError(f"capabilities.{key} is not a known capability (known: {known})")
        tools = changes.get("tools", self.tools)
        if not tools and "tools" in changes:
            changes.setdefault("tool_choice", frozenset({"none"}))
            changes.setdefault("parallel_tool_calls", False)
        elif tools and "tool_choice" not in changes and "auto" not in self.tool_choice:
            changes["tool_choice"] = self.tool_choice | {"auto", "none"}
        return replace(self, **changes)


_FIELD_NAMES: Final = frozenset(f.name for f in fields(Capabilities))
_BOOL_FIELDS: Final = frozenset(f.name for f in fields(Capabilities) if f.type == "bool")


RESPONSES_MODES: Final = ("native", "chat")


def responses_mode(overrides: Mapping[str, object]) -> str | None:
    """A model's ``capabilities.responses``: ``native`` (its upstream speaks the Responses API:
    ``/v1/responses`` is relayed as it is), ``chat`` (translated onto chat completions), or None
    (the provider type's default). Raises ``ValueError`` for anything else."""
    value = overrides.get("responses")
    if value is not None and value not in RESPONSES_MODES:
        raise ValueError(f"capabilities.responses must be {' or '.join(RESPONSES_MODES)}, got {value!r}")
    return value


def is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _modes(value: object) -> frozenset[str]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ValueError(f"capabilities.tool_choice must be a list of modes ({', '.join(TOOL_CHOICE_MODES)})")
    modes = list(value)
    for mode in modes:
        if mode not in TOOL_CHOICE_MODES:
            raise ValueError(
                f"capabilities.tool_choice: unknown mode {mode!r} (known: {', '.join(TOOL_CHOICE_MODES)})"
            )
    return frozenset(modes)


def _formats(value: object) -> dict[str, bool]:
    known = ("text", "json_object", "json_schema")
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ValueError(f"capabilities.response_format must be a list of {', '.join(known)}")
    kinds = list(value)
    for kind in kinds:
        if kind not in known:
            raise ValueError(f"capabilities.response_format: unknown type {kind!r} (known: {', '.join(known)})")
    return {"json_object": "json_object" in kinds, "json_schema": "json_schema" in kinds}


_ALL_MODES: Final = frozenset(TOOL_CHOICE_MODES)

_OPENAI: Final = Capabilities(
    tools=True, tool_choice=_ALL_MODES, parallel_tool_calls=True, json_object=True, json_schema=True,
    vision=True, logprobs=True, max_n=128, context_length=None, streaming=True, embeddings=True,
)

DEFAULTS: Final[Mapping[str, Capabilities]] = MappingProxyType({
    # Any OpenAI-compatible server: pass-through, so assume the whole surface; the upstream
    # refuses what its model lacks (narrow it per model in the configuration).
    "openai": _OPENAI,
    "azure": _OPENAI,
    # /api/chat: tools but no forced choice (tool_choice "none" is honoured by not sending the
    # tools), no parallel switch, `format` for JSON / a schema, images, no logprobs, one choice.
    "ollama": Capabilities(
        tools=True, tool_choice=frozenset({"auto", "none"}), parallel_tool_calls=False, json_object=True,
        json_schema=True, vision=True, logprobs=False, max_n=1, context_length=None, streaming=True,
        embeddings=True,
    ),
    # Messages API: tool_choice auto/none/any/tool, disable_parallel_tool_use; no JSON mode,
    # no logprobs, one choice, no embeddings endpoint.
    "anthropic": Capabilities(
        tools=True, tool_choice=_ALL_MODES, parallel_tool_calls=True, json_object=False, json_schema=False,
        vision=True, logprobs=False, max_n=1, context_length=None, streaming=True, embeddings=False,
    ),
    # generateContent: functionCallingConfig AUTO/NONE/ANY (+allowedFunctionNames), no parallel
    # switch, responseMimeType/responseSchema, inline images, candidateCount up to 8, embedContent.
    "gemini": Capabilities(
        tools=True, tool_choice=_ALL_MODES, parallel_tool_calls=False, json_object=True, json_schema=True,
        vision=True, logprobs=False, max_n=8, context_length=None, streaming=True, embeddings=True,
    ),
    # Local engines: constrained decoding for JSON / a schema, and for function calls (every
    # tool_choice; parallel_tool_calls false is a grammar of one call); no images or logprobs yet,
    # one choice. The context length is checked exactly, with the model's own tokenizer. (Routing
    # takes tools away from the engines that cannot call them: see service/routing.py.)
    "local": Capabilities(
        tools=True, tool_choice=_ALL_MODES, parallel_tool_calls=True, json_object=True,
        json_schema=True, vision=False, logprobs=False, max_n=1, context_length=None, streaming=True,
        embeddings=True,
    ),
})
"""Default capabilities per provider type (read-only)."""


def defaults_for(provider_type: str) -> Capabilities:
    """The default capabilities of a provider type; an unknown type gets the ``openai`` ones."""
    return DEFAULTS.get(provider_type, _OPENAI)


def validate_drop(names: Iterable[object]) -> tuple[str, ...]:
    """Check a model's configured ``drop`` list: its names, de-duplicated, in the given order.

    Known names are :data:`DROPPABLE`. Raises ``ValueError`` naming an unknown entry, or one that
    can never be dropped (``stream``, the context length).
    """
    if isinstance(names, str | bytes):
        raise ValueError("drop must be a list of parameter names, not a single string")
    out: list[str] = []
    for name in names:
        if not isinstance(name, str):
            raise ValueError(f"drop: entries must be parameter names, got {name!r}")
        if name in _NEVER_DROPPABLE:
            raise ValueError(f"drop: '{name}' cannot be dropped ({_NEVER_DROPPABLE[name]})")
        if name not in DROP_GROUPS:
            raise ValueError(f"drop: unknown parameter '{name}' (known: {', '.join(sorted(DROPPABLE))})")
        if name not in out:
            out.append(name)
    return tuple(out)
