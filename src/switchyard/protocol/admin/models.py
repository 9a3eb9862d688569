"""Models in admin bodies (/admin/models): the API record, its spellings, and its errors.

The record (JSON field names; camelCase spellings (maxTokens, inputCostPer1k) are accepted too)::

    alias (name)            the name clients send
    provider                a provider named in the file, or a provider type (then base_url is required)
    model (modelId)         the upstream's model id (default: the alias)
    base_url                overrides the provider's base URL
    credential              a credential name in the encrypted vault (plain API keys are refused)
    max_tokens (maxTokens)  the model's context length -> capabilities.context_length
    supports_streaming      false refuses stream: true (capabilities.streaming)
    default_temperature     temperature sent when a request sets none
    hosted_tools            /v1/responses: hosted tools (web_search, ...) the model cannot run are
                            ``remove``d (the default) or refused with 400 (``reject``)
    rate_limits             {per_minute, per_hour, per_day}: enforced on the model, across every key
    input_cost_per_1k / output_cost_per_1k (or ..._per_1m): USD, for costs and budgets
    cache_read_cost_per_1k / cache_write_cost_per_1k (or ..._per_1m): USD for prompt tokens read
                            from / written to the provider's prompt cache (unset: the input price)
    provider_settings       timeout, max_concurrent, max_queue, queue_timeout, capabilities,
                            drop_params, fallbacks, context_window_fallbacks
    default (isDefault)     at most one: the model for requests that name none (``default_alias``);
                            GET /admin/models marks it
    active (isActive)       inactive models are kept but neither listed nor served
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from switchyard.core.models import StoredModel
from switchyard.errors import BadRequestError
from switchyard.settings import ModelConfig, UpstreamURL

__all__ = [
    "ModelRateLimits",
    "ModelSpec",
    "ProviderSettings",
    "normalize",
    "record_fields",
    "spec_of",
    "spelled_param",
    "validate_model",
]


class ModelRateLimits(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    per_minute: int | None = Field(default=None, ge=1)
    per_hour: int | None = Field(default=None, ge=1)
    per_day: int | None = Field(default=None, ge=1)


class ProviderSettings(BaseModel):
    """The ModelConfig knobs a stored model may set beyond the record's own fields."""

    model_config = ConfigDict(extra="forbid", strict=True)
    timeout: float | None = Field(default=None, gt=0)
    max_concurrent: int | None = Field(default=None, gt=0)
    max_queue: int | None = Field(default=None, ge=0)
    queue_timeout: float | None = Field(default=None, gt=0)
    capabilities: dict[str, Any] = Field(default_factory=dict)
    drop_params: list[str] = Field(default_factory=list)
    fallbacks: list[str] = Field(default_factory=list)
    context_window_fallbacks: list[str] = Field(default_factory=list)


class ModelSpec(BaseModel):
    """One stored model, validated (canonical snake_case names; costs per 1M tokens)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    alias: str = Field(min_length=1, max_length=200, pattern=r"^\S+$")
    provider: str = Field(min_length=1, max_length=200)
    model: str | None = Field(default=None, min_length=1, max_length=500)
    base_url: UpstreamURL | None = Field(default=None, max_length=2048)
    credential: str | None = Field(default=None, min_length=1, max_length=200)
    max_tokens: int | None = Field(default=None, gt=0)
    supports_streaming: bool = True
    default_temperature: float | None = Field(default=None, ge=0, le=2)
    hosted_tools: Literal["remove", "reject"] = "remove"
    rate_limits: ModelRateLimits | None = None
    input_cost_per_1m: float | None = Field(default=None, ge=0)
    output_cost_per_1m: float | None = Field(default=None, ge=0)
    cache_read_cost_per_1m: float | None = Field(default=None, ge=0)
    cache_write_cost_per_1m: float | None = Field(default=None, ge=0)
    provider_settings: ProviderSettings = Field(default_factory=ProviderSettings)
    default: bool = False
    active: bool = True

    def stored(self) -> dict[str, Any]:
        """What goes in the ``config`` column: the record without alias, active and default."""
        out = self.model_dump(exclude={"alias", "active", "default", "provider_settings", "rate_limits"},
                              exclude_none=True)
        if self.hosted_tools == "remove":  # the default: rows written before the field look the same
            del out["hosted_tools"]
        if self.rate_limits is not None:
            out["rate_limits"] = self.rate_limits.model_dump(exclude_none=True)
        settings = self.provider_settings.model_dump(exclude_defaults=True)
        if settings:
            out["provider_settings"] = settings
        return out

    def to_config(self) -> ModelConfig:
        ps = self.provider_settings
        caps = dict(ps.capabilities)
        if self.max_tokens is not None:
            caps["context_length"] = self.max_tokens
        if not self.supports_streaming:
            caps["streaming"] = False
        return ModelConfig.model_validate({
            "alias": self.alias, "provider": self.provider, "model": self.model, "base_url": self.base_url,
            "credential": self.credential, "capabilities": caps, "drop_params": ps.drop_params,
            "fallbacks": ps.fallbacks, "context_window_fallbacks": ps.context_window_fallbacks,
            "default_temperature": self.default_temperature, "hosted_tools": self.hosted_tools, "timeout": ps.timeout,
            "max_concurrent": ps.max_concurrent, "max_queue": ps.max_queue, "queue_timeout": ps.queue_timeout,
            "enabled": self.active, "input_cost_per_1m": self.input_cost_per_1m,
            "output_cost_per_1m": self.output_cost_per_1m,
            "cache_read_cost_per_1m": self.cache_read_cost_per_1m,
            "cache_write_cost_per_1m": self.cache_write_cost_per_1m,
            "rate_limits": None if self.rate_limits is None else {
                "rpm": self.rate_limits.per_minute, "rph": self.rate_limits.per_hour, "rpd": self.rate_limits.per_day},
        })


def record_fields(row: StoredModel) -> dict[str, Any]:
    return {**row.config, "alias": row.alias, "active": row.active, "default": row.is_default}


def spec_of(row: StoredModel) -> ModelSpec:
    """The validated record of a stored row (raises ``ValidationError`` for a damaged one)."""
    return ModelSpec.model_validate(record_fields(row))


# -- request bodies: spellings and errors ----------------------------------------
_SYNONYMS = {
    "name": "alias", "model_id": "model", "upstream_id": "model", "upstream_model": "model",
    "is_default": "default", "is_active": "active", "enabled": "active",
    "context_length": "max_tokens", "context_window": "max_tokens", "streaming": "supports_streaming",
    "temperature": "default_temperature", "settings": "provider_settings",
}
_RATE_SYNONYMS = {"requests_per_minute": "per_minute", "requests_per_hour": "per_hour", "requests_per_day": "per_day",
                  "rpm": "per_minute", "rph": "per_hour", "rpd": "per_day",
                  "minute": "per_minute", "hour": "per_hour", "day": "per_day"}
_TOP_RATE = re.compile(r"^(?:rate_limit|requests)_(per_(?:minute|hour|day))$")
_SECRET_KEYS = frozenset({"api_key", "apikey", "key", "secret", "token", "api_token"})
# What GET answers beyond the record: ignored in a body, so a fetched record can be sent back.
_READ_ONLY = frozenset({"id", "object", "source", "shadowed_by_file", "status", "note", "created_at", "updated_at",
                        "rate_limits_enforced"})
_NO_PLAIN_KEYS = ("Plain API keys are not accepted by /admin/models: store the key in the encrypted credential "
                  "vault and name it in 'credential'.")


def _snake(key: str) -> str:
    key = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", key).lower().replace("-", "_")
    return re.sub(r"per(\d)", r"per_\1", key)


def _put(out: dict[str, Any], spelled: dict[str, str], name: str, value: Any, original: str) -> None:
    if name in out and name.endswith("_cost_per_1m") and _same_number(out[name], value):
        return  # the per-1k and per-1M spellings of one price, as GET shows them
    if name in out:
        raise BadRequestError(f"'{spelled[name]}' and '{original}' name the same field; give one.", param=original)
    out[name] = value
    spelled[name] = original


def _same_number(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (a, b))
    return numbers and abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))


def normalize(body: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Canonical field names (and costs per 1M) for a create body or a patch; ``None`` values are
    kept (in a patch they remove a field). Also returns canonical name -> the client's spelling."""
    out: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    rates: dict[str, Any] = {}
    for original, value in body.items():
        name = _snake(original)
        name = _SYNONYMS.get(name, name)
        if name in _READ_ONLY:
            continue
        if name in _SECRET_KEYS:
            raise BadRequestError(_NO_PLAIN_KEYS, param=original, code="plain_api_key")
        top_rate = _TOP_RATE.match(name)
        if top_rate:
            rates[top_rate.group(1)] = value
            spelled[f"rate_limits.{top_rate.group(1)}"] = original
            continue
        cost = re.fullmatch(r"(input|output|cache_read|cache_write)_cost_per_(1k|1m)", name)
        if cost:
            name = f"{cost.group(1)}_cost_per_1m"
            if cost.group(2) == "1k" and isinstance(value, int | float) and not isinstance(value, bool):
                value = round(value * 1000, 9)
        elif name == "rate_limits" and isinstance(value, Mapping):
            value = {_RATE_SYNONYMS.get(_snake(k), _snake(k)): v for k, v in value.items()}
        elif name == "provider_settings" and isinstance(value, Mapping):
            inner: dict[str, Any] = {}
            for k, v in value.items():
                snake = _snake(k)
                if snake in _SECRET_KEYS:
                    raise BadRequestError(_NO_PLAIN_KEYS, param=f"{original}.{k}", code="plain_api_key")
                inner[snake] = v
            value = inner
        _put(out, spelled, name, value, original)
    if rates:
        merged = dict(out.get("rate_limits") or {})
        merged.update(rates)
        out["rate_limits"] = merged
    return out, spelled


def spelled_param(loc: Sequence[int | str], spelled: Mapping[str, str]) -> str:
    parts = [str(p) for p in loc]
    if not parts:
        return ""
    joined = ".".join(parts)
    for canonical, original in spelled.items():
        if joined == canonical or joined.startswith(canonical + "."):
            return original + joined[len(canonical):]
    return joined


def validate_model(values: Mapping[str, Any], spelled: Mapping[str, str]) -> ModelSpec:
    try:
        return ModelSpec.model_validate(values)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        param = spelled_param(err["loc"], spelled) or None
        if err["type"] == "extra_forbidden":
            where = "provider_settings" if err["loc"][0] == "provider_settings" else "a model"
            known = ProviderSettings.model_fields if where == "provider_settings" else ModelSpec.model_fields
            message = f"Invalid model: '{param}' is not a field of {where} (known: {', '.join(known)})."
        elif err["type"] == "missing":
            message = f"Invalid model: '{param}' is required."
        else:
            message = f"Invalid model: {param}: {err['msg']}"
        raise BadRequestError(message, param=param) from None
