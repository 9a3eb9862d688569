"""What the configuration names: upstream providers, model aliases and their deployments, local
models, rate limits, and the one rule for an upstream URL."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    SerializationInfo,
    field_serializer,
    field_validator,
)

from switchyard.core.time import parse_duration

__all__ = [
    "ENV_REF",
    "PROVIDER_TYPES",
    "ConfigError",
    "DeploymentConfig",
    "LocalModelConfig",
    "ModelConfig",
    "ProviderConfig",
    "ProviderType",
    "RateLimitConfig",
    "UpstreamURL",
    "is_upstream_url",
    "reveal_secret",
]

ProviderType = Literal["openai", "ollama", "anthropic", "gemini", "azure"]
PROVIDER_TYPES: tuple[str, ...] = ("openai", "ollama", "anthropic", "gemini", "azure")
ENV_REF = "os.environ/"


class ConfigError(Exception):
    """A configuration problem, with the line or field it came from."""


def reveal_secret(value: SecretStr | None, info: SerializationInfo) -> str | None:
    """Secrets stay masked in dumps, except when handing settings to worker processes."""
    if value is None:
        return None
    ctx = info.context or {}
    return value.get_secret_value() if ctx.get("reveal") else "**********"


_UPSTREAM_URL = re.compile(r"^https?://[^/\s]+\S*$")  # http(s), a host, no spaces


def is_upstream_url(value: str) -> bool:
    """What the upstream client can open: http:// or https://, a host, no whitespace."""
    return _UPSTREAM_URL.match(value) is not None


def _upstream_url(value: str) -> str:
    if not is_upstream_url(value):
        raise ValueError(
            f"an upstream URL is http:// or https:// and a host, like http://127.0.0.1:11434; not {value!r}")
    return value


UpstreamURL = Annotated[str, AfterValidator(_upstream_url)]


class ProviderConfig(BaseModel):
    """A named upstream server. Models refer to it by name."""

    model_config = ConfigDict(extra="forbid")

    type: ProviderType = Field(description="Wire format the upstream speaks.")
    base_url: UpstreamURL = Field(description="Upstream base URL (for openai, including /v1).")
    api_key: SecretStr | None = Field(
        default=None, description="Credential: a literal, or an env reference 'os.environ/NAME'."
    )
    credential: str | None = Field(
        default=None, description="Name of a credential in the encrypted vault (instead of api_key)."
    )
    api_version: str | None = Field(
        default=None, description="azure: the api-version query parameter (default 2024-10-21)."
    )
    prefix_routing: bool = Field(
        default=False, description="Route 'NAME/model' requests to this provider (e.g. ollama/qwen2.5:3b)."
    )
    timeout: float = Field(default=600.0, gt=0, description="Seconds before an upstream call times out.")
    max_concurrent: int | None = Field(
        default=None, gt=0, description="Cap on in-flight requests, shared by every model on this provider."
    )
    max_queue: int = Field(default=32, ge=0, description="Requests that may wait for a slot; beyond: 429.")
    queue_timeout: float = Field(default=30.0, gt=0, description="Seconds a request may wait; then 503.")
    cooldown_failures: int = Field(
        default=5, ge=0, description="Failures (no connection, timeout, 5xx) within cooldown_window that make "
        "this upstream cool down; 0: never.",
    )
    cooldown_window: float = Field(default=30.0, gt=0, description="Seconds in which those failures count.")
    cooldown_seconds: float = Field(
        default=30.0, gt=0, description="Seconds it is skipped (while another deployment can serve) before a probe.",
    )
    enabled: bool = Field(default=True, description="Disabled providers serve nothing.")

    @field_serializer("api_key", when_used="json")
    def _ser_key(self, value: SecretStr | None, info: SerializationInfo) -> str | None:
        return reveal_secret(value, info)


class RateLimitConfig(BaseModel):
    """Request and token limits; unset ones are unlimited."""

    model_config = ConfigDict(extra="forbid")

    rpm: int | None = Field(default=None, gt=0, description="Requests per minute.")
    tpm: int | None = Field(default=None, gt=0, description="Tokens (prompt + completion) per minute.")
    rph: int | None = Field(default=None, gt=0, description="Requests per hour.")
    rpd: int | None = Field(default=None, gt=0, description="Requests per day.")
    max_parallel: int | None = Field(default=None, gt=0, description="Requests in flight at once.")


class DeploymentConfig(BaseModel):
    """One place an alias can be served from. An alias with several is load-balanced and fails over."""

    model_config = ConfigDict(extra="forbid")

    provider: str = Field(description="A name under 'providers', or a provider type with base_url set.")
    model: str | None = Field(default=None, description="Upstream model name; defaults to the alias.")
    base_url: UpstreamURL | None = Field(default=None, description="Overrides the provider's base URL.")
    api_key: SecretStr | None = Field(default=None, description="Overrides the provider's credential.")
    credential: str | None = Field(default=None, description="A vault credential name (instead of api_key).")
    weight: float = Field(default=1.0, gt=0, description="Share of traffic under 'weighted' routing.")
    timeout: float | None = Field(default=None, gt=0, description="Overrides the provider's timeout.")

    @field_serializer("api_key", when_used="json")
    def _ser_key(self, value: SecretStr | None, info: SerializationInfo) -> str | None:
        return reveal_secret(value, info)


class ModelConfig(BaseModel):
    """An alias that clients use, mapped to a provider and the upstream's model name."""

    model_config = ConfigDict(extra="forbid")

    alias: str = Field(min_length=1, description="The model name clients send.")
    provider: str | None = Field(
        default=None, description="A name under 'providers', or a provider type with base_url set. "
        "Required unless 'deployments' is given.",
    )
    model: str | None = Field(default=None, description="Upstream model name; defaults to the alias.")
    base_url: UpstreamURL | None = Field(default=None, description="Overrides the provider's base URL.")
    api_key: SecretStr | None = Field(default=None, description="Overrides the provider's credential.")
    credential: str | None = Field(default=None, description="A vault credential name (instead of api_key).")
    deployments: list[DeploymentConfig] = Field(
        default_factory=list, description="Several places to serve this alias from (instead of provider/model)."
    )
    routing: Literal["weighted", "least_busy", "ordered"] = Field(
        default="weighted", description="How deployments are tried: weighted random, fewest in flight first, "
        "or in the order listed (primary, then backups).",
    )
    fallbacks: list[str] = Field(
        default_factory=list, description="Aliases tried in order when every deployment fails (429, 5xx, "
        "timeout, no connection), before any byte reached the client.",
    )
    context_window_fallbacks: list[str] = Field(
        default_factory=list, description="Aliases tried when the prompt is too long for this one.",
    )
    capabilities: dict[str, Any] = Field(
        default_factory=dict, description="Overrides of the provider's capabilities (tools, tool_choice, "
        "json_object, json_schema, vision, logprobs, max_n, max_stop, context_length, streaming, ...).",
    )
    drop_params: list[str] = Field(
        default_factory=list, description="Parameters this model cannot honour that are removed instead of "
        "refused with 400 (e.g. logprobs, n, response_format, tools, vision).",
    )
    default_temperature: float | None = Field(
        default=None, ge=0, le=2, description="temperature used when the request sets none."
    )
    hosted_tools: Literal["remove", "reject"] = Field(
        default="remove", description="/v1/responses: hosted tools (web_search, file_search, ...) the model "
        "cannot run are removed and named in a header, or refused with 400 (reject).",
    )
    rate_limits: RateLimitConfig | None = Field(
        default=None, description="Limits on this model across every key (rpm, tpm, rph, rpd, max_parallel)."
    )
    timeout: float | None = Field(default=None, gt=0, description="Overrides the provider's timeout.")
    max_concurrent: int | None = Field(default=None, gt=0, description="Cap on in-flight requests for this alias.")
    max_queue: int | None = Field(default=None, ge=0, description="Requests that may wait (default: provider's).")
    queue_timeout: float | None = Field(default=None, gt=0, description="Seconds a request may wait for a slot.")
    enabled: bool = Field(default=True, description="Disabled models are neither listed nor served.")
    input_cost_per_1m: float | None = Field(default=None, ge=0, description="USD per 1M prompt tokens (metrics).")
    output_cost_per_1m: float | None = Field(default=None, ge=0, description="USD per 1M completion tokens.")
    cache_read_cost_per_1m: float | None = Field(
        default=None, ge=0, description="USD per 1M prompt tokens read from the provider's prompt cache "
        "(OpenAI's cached_tokens, Anthropic's cache reads); unset: the input price.")
    cache_write_cost_per_1m: float | None = Field(
        default=None, ge=0, description="USD per 1M prompt tokens written to the provider's prompt cache "
        "(Anthropic's cache creation); unset: the input price.")

    @field_serializer("api_key", when_used="json")
    def _ser_key(self, value: SecretStr | None, info: SerializationInfo) -> str | None:
        return reveal_secret(value, info)

    @property
    def upstream_model(self) -> str:
        return self.model or self.alias


class LocalModelConfig(BaseModel):
    """A model Switchyard runs itself (llama.cpp, transformers, the numpy BERT engine or sentence-transformers)."""

    model_config = ConfigDict(extra="forbid")

    alias: str = Field(min_length=1, description="The model name clients send.")
    engine: Literal["llamacpp", "transformers", "bert", "sentence_transformers"] = Field(
        description="llamacpp: a GGUF file; transformers: a Hugging Face model directory or id (chat); "
        "bert: a BERT sentence-embedding model directory (numpy, no torch); "
        "sentence_transformers: an embedding model directory or id.",
    )
    model: str = Field(min_length=1, description="A file or directory path, or a Hugging Face id (needs the hub).")
    context_length: int | None = Field(default=None, gt=0, description="Context in tokens; default the model's.")
    threads: int | None = Field(default=None, gt=0, description="CPU threads per generation; default safe for "
                                "the machine's cores.")
    device: Literal["cpu", "cuda", "auto"] = Field(default="auto", description="Where the model runs.")
    max_batch: int = Field(default=8, gt=0, description="transformers: streams decoded together in one batch.")
    parallel: int | Literal["auto"] = Field(
        default="auto", description="llamacpp: sequences decoded together (slots sharing one KV cache); auto: "
        "as many as fit the memory budget, at most 4.",
    )
    batch_tokens: int = Field(default=512, gt=0, description="llamacpp: tokens evaluated per step (one per "
                              "decoding stream, the rest for chunks of prompts); never less than parallel.")
    prefix_cache_scope: Literal["owner", "shared", "off"] = Field(
        default="owner", description="llamacpp: a slot's cached prompt prefix is reused by requests of the same "
        "owner (the key's team, else its user, else the key), by anyone (shared), or never (off).",
    )
    chat_template: str | None = Field(default=None, description="A Jinja chat template overriding the model's.")
    pinned: bool = Field(default=False, description="Never evicted or expired once loaded.")
    preload: bool = Field(default=False, description="Load at start instead of on first use.")
    keep_alive: str | float = Field(
        default="5m", description="Idle time before unloading ('5m', '1h', seconds; -1: never). Requests may "
        "set keep_alive too, as with Ollama.",
    )
    max_concurrent: int | None = Field(
        default=None, gt=0, description="Requests served at once (default: parallel for llamacpp, max_batch "
        "for transformers, 4 for embeddings).",
    )
    max_queue: int = Field(default=16, ge=0, description="Requests that may wait for a slot; beyond: 429.")
    queue_timeout: float = Field(default=60.0, gt=0, description="Seconds a request may wait; then 503.")
    default_temperature: float | None = Field(default=None, ge=0, le=2,
                                              description="temperature used when the request sets none.")
    max_tokens: int | None = Field(default=None, gt=0, description="Completion limit when the request sets "
                                   "none (default: whatever room the context has left).")
    max_tool_calls: int = Field(default=8, ge=1, le=8, description="llamacpp: function calls one answer may "
                                "hold when the request allows parallel calls (1: one call a turn, for a small "
                                "model that would repeat its call).")
    enabled: bool = Field(default=True, description="Disabled models are neither listed nor served.")

    @field_validator("keep_alive")
    @classmethod
    def _duration(cls, value: str | float) -> str | float:
        parse_duration(value)  # ValueError -> a config error naming the field
        return value

    @field_validator("parallel")
    @classmethod
    def _slots(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 1 <= value <= 64:
            raise ValueError("parallel must be 'auto' or a number of slots from 1 to 64")
        return value
