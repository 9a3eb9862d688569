"""Validate OpenAI request bodies and convert them, once, into core types.

The models check what the gateway relies on and keep every other field (``extra="allow"``):
the validated dict itself travels on as ``body`` so unknown fields reach compatible upstreams.
Validation errors become a 400 whose ``param`` names the offending field (``messages[0].role``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from switchyard.core.chat import ChatRequest, GenerationKind
from switchyard.core.embeddings import EmbeddingRequest
from switchyard.errors import BadRequestError

__all__ = ["parse_chat_request", "parse_completion_request", "parse_embedding_request", "steering_path"]

KeepAlive = str | int | float | None

# Fields some upstreams (LiteLLM, SDK wrappers) read as "connect here / send these headers".
# Clients never choose where the gateway connects, so a request carrying one is refused.
STEERING_FIELDS = frozenset({
    "api_base", "base_url", "api_key", "api_version", "azure_endpoint", "azure_ad_token", "organization",
    "extra_headers", "headers", "custom_llm_provider", "litellm_params", "aws_access_key_id",
    "aws_secret_access_key", "aws_region_name", "vertex_project", "vertex_credentials",
    "api_base_url", "proxy", "proxies", "default_headers", "http_client",
})
# Subtrees that are the client's own data, where any name may appear: JSON Schemas (a tool may
# well take a "url" or "headers" argument) and free-form metadata values.
_DATA_KEYS = frozenset({"parameters", "schema", "json_schema", "input_schema", "properties", "$defs", "definitions"})


def _steering_path(node: Any) -> str | None:
    """The path of a connection-steering field anywhere in the body (``metadata.api_base``,
    ``messages[0].base_url``), or None. Strings (prompts) are not walked, a dict with none of
    the names is passed over in one set operation, and a path is only built for a find."""
    found = _find_steering(node)
    if found is None:
        return None
    out = ""
    for part in reversed(found):
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


steering_path = _steering_path  # for bodies relayed whole (a native /v1/responses)


def _find_steering(node: Any) -> list[str | int] | None:
    """The steering field's path, innermost first (the JSON reader bounds the depth)."""
    if isinstance(node, dict):
        if not STEERING_FIELDS.isdisjoint(node):
            return [min(STEERING_FIELDS.intersection(node))]
        for key, value in node.items():
            if isinstance(value, dict | list) and key not in _DATA_KEYS:
                found = _find_steering(value)
                if found is not None:
                    found.append(key)
                    return found
    else:
        for i, item in enumerate(node):
            if isinstance(item, dict | list):
                found = _find_steering(item)
                if found is not None:
                    found.append(i)
                    return found
    return None


class _Wire(BaseModel):
    model_config = ConfigDict(extra="allow", strict=False)


class FunctionCall(_Wire):
    name: str
    arguments: str | dict[str, Any] = "{}"


class ToolCall(_Wire):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(_Wire):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    @model_validator(mode="after")
    def _check(self) -> Message:
        if self.role in ("system", "developer", "user") and self.content is None:
            raise ValueError(f"a {self.role} message needs content")
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs tool_call_id")
        if self.role == "assistant" and self.content is None and not self.tool_calls:
            # OpenAI accepts an empty assistant turn only with tool_calls (or function_call)
            if getattr(self, "function_call", None) is None:
                raise ValueError("an assistant message needs content or tool_calls")
        return self


class Tool(_Wire):
    type: str = "function"
    function: dict[str, Any]


class StreamOptions(_Wire):
    include_usage: bool | None = None


class _Generation(_Wire):
    model: str = Field(min_length=1)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    n: Annotated[int, Field(ge=1, le=128)] | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    logprobs: bool | int | None = None
    keep_alive: KeepAlive = None  # (how many stop sequences a model takes is its capability max_stop)


class ChatCompletionRequest(_Generation):
    messages: Annotated[list[Message], Field(min_length=1)]
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    tools: list[Tool] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None

    @field_validator("response_format")
    @classmethod
    def _formats(cls, fmt: dict[str, Any] | None) -> dict[str, Any] | None:
        if fmt is not None:
            kind = fmt.get("type")
            if kind not in ("text", "json_object", "json_schema"):
                raise ValueError("response_format.type must be text, json_object or json_schema")
            if kind == "json_schema" and not isinstance(fmt.get("json_schema"), dict):
                raise ValueError("response_format.json_schema is required for type json_schema")
        return fmt


class CompletionRequest(_Generation):
    prompt: str | list[str] | list[int] | list[list[int]]


class EmbeddingRequestWire(_Wire):
    model: str = Field(min_length=1)
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int, Field(ge=1)] | None = None
    keep_alive: KeepAlive = None


def _param(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in {"str", "list[str]", "list[int]", "list[list[int]]", "function-after"} or "[" in part:
            continue  # pydantic's union-branch labels are not fields
        else:
            out += f".{part}" if out else part
    return out


def _validate(model: type[_Wire], body: Any) -> Any:
    if not isinstance(body, dict):
        raise BadRequestError("The request body must be a JSON object.")
    steering = _steering_path(body)
    if steering is not None:
        raise BadRequestError(
            f"Invalid request: {steering}: not accepted; the gateway decides where requests go.",
            param=steering, code="field_not_allowed",
        )
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        param = _param(tuple(err["loc"])) or None
        msg = err["msg"].removeprefix("Value error, ")
        raise BadRequestError(f"Invalid request: {param or 'body'}: {msg}", param=param) from None


def _keep_alive(value: KeepAlive) -> str | int | None:
    return int(value) if isinstance(value, float) else value


def parse_chat_request(body: Any) -> ChatRequest:
    wire: ChatCompletionRequest = _validate(ChatCompletionRequest, body)
    return ChatRequest(
        kind=GenerationKind.CHAT,
        model=wire.model,
        body=body,
        stream=bool(wire.stream),
        include_usage=bool(wire.stream_options and wire.stream_options.include_usage),
        max_tokens=wire.max_completion_tokens or wire.max_tokens,
        keep_alive=_keep_alive(wire.keep_alive),
    )


def parse_completion_request(body: Any) -> ChatRequest:
    wire: CompletionRequest = _validate(CompletionRequest, body)
    return ChatRequest(
        kind=GenerationKind.COMPLETION,
        model=wire.model,
        body=body,
        stream=bool(wire.stream),
        include_usage=bool(wire.stream_options and wire.stream_options.include_usage),
        max_tokens=wire.max_tokens,
        keep_alive=_keep_alive(wire.keep_alive),
    )


def parse_embedding_request(body: Any) -> EmbeddingRequest:
    wire: EmbeddingRequestWire = _validate(EmbeddingRequestWire, body)
    raw = wire.input
    inputs: list[Any]
    if isinstance(raw, str):
        inputs = [raw]
    elif raw and all(isinstance(x, int) for x in raw):
        inputs = [list(raw)]
    else:
        inputs = list(raw)
    if not inputs or any((isinstance(x, str | list) and len(x) == 0) for x in inputs):
        raise BadRequestError("Invalid request: input must not be empty.", param="input")
    return EmbeddingRequest(
        model=wire.model,
        inputs=inputs,
        encoding_format=wire.encoding_format,
        dimensions=wire.dimensions,
        body=body,
        keep_alive=_keep_alive(wire.keep_alive),
    )
