"""Models managed over /admin/models: stored in the database, merged with the YAML file's, live.

The API record (JSON field names; the seed's camelCase spellings are accepted too)::

    alias (name)            the name clients send
    provider                a provider named in the file, or a provider type (then base_url is required)
    model (modelId)         the upstream's model id (default: the alias)
    base_url                overrides the provider's base URL
    credential              a credential name in the encrypted vault (plain API keys are refused)
    max_tokens (maxTokens)  the model's context length -> capabilities.context_length
    supports_streaming      false refuses stream: true (capabilities.streaming)
    default_temperature     temperature sent when a request sets none
    rate_limits             {per_minute, per_hour, per_day}: enforced on the model, across every key
    input_cost_per_1k / output_cost_per_1k (or ..._per_1m): USD, for the cost metrics
    provider_settings       timeout, max_concurrent, max_queue, queue_timeout, capabilities,
                            drop_params, fallbacks, context_window_fallbacks
    default (isDefault)     at most one: the model for requests that name none (``default_alias``);
                            GET /admin/models marks it
    active (isActive)       inactive models are kept but neither listed nor served

Merging: the file's models are served as configured; a stored model whose alias the file also
defines is kept but not served (the file wins), and the admin API says so (``shadowed_by_file``).

Every replica polls :meth:`SqlModelStore.revision` (one index read) each interval and, when it
changed, reloads the stored models, rebuilds the routing table and swaps it into the gateway.
Writes through this replica apply at once. A stored model that cannot be built (say its vault
credential was deleted) is logged and skipped; it never takes the server down.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from switchyard.core.capabilities import defaults_for, validate_drop
from switchyard.errors import BadRequestError, NotFoundError
from switchyard.service.background import every, stop_task
from switchyard.service.routing import RoutingTable
from switchyard.settings import PROVIDER_TYPES, ConfigError, ModelConfig, Settings, UpstreamURL, model_problems
from switchyard.store.models import DuplicateAliasError, StoredModel

__all__ = [
    "ModelCatalog",
    "ModelSpec",
    "ModelStore",
    "RoutingSink",
    "SecretsSource",
    "spec_of",
]

log = logging.getLogger("switchyard.models")

SecretsSource = Callable[[], Awaitable[Mapping[str, str]]]
_RETRY_PROBLEMS_S = 10.0  # how often rows that failed to build are retried (a credential may appear)


class ModelStore(Protocol):
    async def get(self, model_id: str) -> StoredModel | None: ...
    async def get_by_alias(self, alias: str) -> StoredModel | None: ...
    async def list(self) -> list[StoredModel]: ...
    async def revision(self) -> int: ...
    async def add(self, alias: str, config: Mapping[str, Any], *, at: datetime, active: bool = True,
                  is_default: bool = False, model_id: str | None = None) -> StoredModel: ...
    async def update(self, model_id: str, *, alias: str, config: Mapping[str, Any], active: bool,
                     is_default: bool, at: datetime) -> StoredModel | None: ...
    async def delete(self, model_id: str, at: datetime) -> bool: ...


class RoutingSink(Protocol):
    """Where a rebuilt routing table goes: the gateway."""

    def apply_routing(self, table: RoutingTable) -> None: ...


# -- the API record ------------------------------------------------------------------------
class RateLimits(BaseModel):
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
    rate_limits: RateLimits | None = None
    input_cost_per_1m: float | None = Field(default=None, ge=0)
    output_cost_per_1m: float | None = Field(default=None, ge=0)
    provider_settings: ProviderSettings = Field(default_factory=ProviderSettings)
    default: bool = False
    active: bool = True

    def stored(self) -> dict[str, Any]:
        """What goes in the ``config`` column: the record without alias, active and default."""
        out = self.model_dump(exclude={"alias", "active", "default", "provider_settings", "rate_limits"},
                              exclude_none=True)
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
            "default_temperature": self.default_temperature, "timeout": ps.timeout,
            "max_concurrent": ps.max_concurrent, "max_queue": ps.max_queue, "queue_timeout": ps.queue_timeout,
            "enabled": self.active, "input_cost_per_1m": self.input_cost_per_1m,
            "output_cost_per_1m": self.output_cost_per_1m,
            "rate_limits": None if self.rate_limits is None else {
                "rpm": self.rate_limits.per_minute, "rph": self.rate_limits.per_hour, "rpd": self.rate_limits.per_day},
        })


def _fields(row: StoredModel) -> dict[str, Any]:
    return {**row.config, "alias": row.alias, "active": row.active, "default": row.is_default}


def spec_of(row: StoredModel) -> ModelSpec:
    """The validated record of a stored row (raises ``ValidationError`` for a damaged one)."""
    return ModelSpec.model_validate(_fields(row))


# -- request bodies: spellings, merge patch, errors ----------------------------------------
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


def _normalize(body: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
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
        cost = re.fullmatch(r"(input|output)_cost_per_(1k|1m)", name)
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


def _merge_patch(target: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """RFC 7396 JSON merge patch: objects merge recursively, null removes a field."""
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge_patch(out[key], value)
        else:
            out[key] = value
    return out


def _param(loc: Sequence[int | str], spelled: Mapping[str, str]) -> str:
    parts = [str(p) for p in loc]
    if not parts:
        return ""
    joined = ".".join(parts)
    for canonical, original in spelled.items():
        if joined == canonical or joined.startswith(canonical + "."):
            return original + joined[len(canonical):]
    return joined


def _validate(values: Mapping[str, Any], spelled: Mapping[str, str]) -> ModelSpec:
    try:
        return ModelSpec.model_validate(values)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        param = _param(err["loc"], spelled) or None
        if err["type"] == "extra_forbidden":
            where = "provider_settings" if err["loc"][0] == "provider_settings" else "a model"
            known = ProviderSettings.model_fields if where == "provider_settings" else ModelSpec.model_fields
            message = f"Invalid model: '{param}' is not a field of {where} (known: {', '.join(known)})."
        elif err["type"] == "missing":
            message = f"Invalid model: '{param}' is required."
        else:
            message = f"Invalid model: {param}: {err['msg']}"
        raise BadRequestError(message, param=param) from None


def _problem_param(loc: tuple[int | str, ...], message: str) -> str:
    rest = [str(p) for p in loc[1:]]
    if not rest:
        return "base_url" if "base_url" in message else "provider"
    if rest[0] in ("fallbacks", "context_window_fallbacks"):
        return ".".join(["provider_settings", *rest])
    return ".".join(rest)


def _now() -> datetime:
    return datetime.now(UTC)


class ModelCatalog:
    """Stored models -> the gateway's routing table, on every replica. See the module docstring."""

    def __init__(
        self,
        store: ModelStore,
        settings: Settings,
        gateway: RoutingSink,
        *,
        interval: float | None = None,
        secrets: SecretsSource | None = None,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self._store = store
        self._settings = settings
        self._gateway = gateway
        self._interval = settings.key_refresh_interval if interval is None else interval
        self._secrets = secrets
        self._clock = clock
        self._file = {m.alias: m for m in settings.models}
        self._rows: list[StoredModel] = []
        self._revision: int | None = None
        self._problems: dict[str, str] = {}  # model id -> why this replica does not serve it
        self._served: frozenset[str] = frozenset()  # stored aliases in the applied table
        self._announced: set[str] = set()  # shadowed aliases already logged
        self._retry_at = 0.0
        self._broken = False  # the last rebuild failed as a whole
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        await self.reload()
        self._task = every(self._interval, self.poll, name="switchyard-model-catalog", log=log,
                           failed="model catalog refresh failed; serving the last table")

    async def aclose(self) -> None:
        await stop_task(self._task)
        self._task = None

    async def poll(self) -> bool:
        """One poll: reload when the stored models changed (or failed rows are due a retry)."""
        retry = (self._broken or bool(self._problems)) and time.monotonic() >= self._retry_at
        if retry or await self._store.revision() != self._revision:
            await self.reload()
            return True
        return False

    async def reload(self) -> None:
        """Read the stored models (and the vault), rebuild the routing table and apply it."""
        async with self._lock:
            revision = await self._store.revision()  # before the rows: a write in between is seen next poll
            rows = await self._store.list()
            secrets = dict(await self._secrets()) if self._secrets is not None else None
            extra, problems = self._configs(rows)
            self._rows, self._revision = rows, revision
            self._retry_at = time.monotonic() + _RETRY_PROBLEMS_S
            try:
                table = self._table(extra, secrets, problems)
            except (ConfigError, ValueError) as exc:  # the file's own models no longer build
                log.error("model catalog: the routing table cannot be built (%s); serving the last one", exc)
                self._broken = True
                self._problems = {row.id: f"the routing table cannot be built: {exc}" for row in rows}
                return
            self._gateway.apply_routing(table)
            self._report(rows, problems)
            self._broken = False
            self._problems = problems
            self._served = frozenset(a for a in table.routes if a not in self._file)

    def _configs(self, rows: Sequence[StoredModel]) -> tuple[list[tuple[StoredModel, ModelConfig]], dict[str, str]]:
        extra: list[tuple[StoredModel, ModelConfig]] = []
        problems: dict[str, str] = {}
        for row in rows:
            if row.alias in self._file or not row.active:
                continue
            try:
                extra.append((row, spec_of(row).to_config()))
            except ValidationError as exc:
                err = exc.errors(include_url=False)[0]
                problems[row.id] = f"invalid stored record: {'.'.join(map(str, err['loc']))}: {err['msg']}"
        return extra, problems

    def _table(self, extra: list[tuple[StoredModel, ModelConfig]], secrets: Mapping[str, str] | None,
               problems: dict[str, str]) -> RoutingTable:
        try:
            return RoutingTable(self._settings, extra_models=[c for _, c in extra], secrets=secrets,
                                default_model=self.default_alias)
        except (ConfigError, ValueError):
            pass
        good: list[ModelConfig] = []
        for row, config in extra:  # find the rows that break it, one by one
            try:
                RoutingTable(self._settings, extra_models=[config], secrets=secrets)
                good.append(config)
            except (ConfigError, ValueError) as exc:
                problems[row.id] = str(exc)
        return RoutingTable(self._settings, extra_models=good, secrets=secrets, default_model=self.default_alias)

    def _report(self, rows: Sequence[StoredModel], problems: Mapping[str, str]) -> None:
        by_id = {row.id: row for row in rows}
        for model_id, problem in problems.items():
            if self._problems.get(model_id) != problem:
                log.warning("stored model '%s' (%s) is not served: %s", by_id[model_id].alias, model_id, problem)
        for row in rows:
            if row.alias in self._file and row.alias not in self._announced:
                self._announced.add(row.alias)
                log.warning("stored model '%s' (%s) is shadowed: the configuration file defines '%s', and the "
                            "file wins", row.alias, row.id, row.alias)

    # -- what replicas serve -----------------------------------------------------------------
    @property
    def file_models(self) -> list[ModelConfig]:
        return list(self._file.values())

    def file_model(self, alias: str) -> ModelConfig | None:
        return self._file.get(alias)

    def status(self, row: StoredModel) -> tuple[str, str | None]:
        """(status, reason) of a stored model on this replica: serving, inactive, shadowed_by_file,
        error, or not_served (its provider is disabled, or this replica has not loaded it yet)."""
        if row.alias in self._file:
            where = f" ({self._settings.config_file})" if self._settings.config_file else ""
            return "shadowed_by_file", (
                f"The configuration file{where} also defines '{row.alias}'. The file wins: its definition is "
                "served and this stored one is ignored until the file's entry is removed.")
        if not row.active:
            return "inactive", None
        problem = self._problems.get(row.id)
        if problem is not None:
            return "error", problem
        if row.alias in self._served:
            return "serving", None
        return "not_served", "Not in this replica's routing table (its provider may be disabled in the file)."

    @property
    def default_alias(self) -> str | None:
        """The active stored model marked default: the model meant when a request names none."""
        for row in self._rows:
            if row.is_default and row.active:
                return row.alias
        return None

    # -- administration ---------------------------------------------------------------------
    async def list(self) -> list[StoredModel]:
        return await self._store.list()

    async def find(self, ident: str) -> StoredModel | None:
        """A stored model by id, else by alias."""
        return await self._store.get(ident) or await self._store.get_by_alias(ident)

    async def _existing(self, ident: str) -> StoredModel:
        row = await self.find(ident)
        if row is not None:
            return row
        if ident in self._file:
            raise BadRequestError(
                f"The model '{ident}' is defined in the configuration file; change it there. Only models added "
                "over /admin/models can be changed here.", param="id", code="file_model")
        raise NotFoundError(f"No stored model with id or alias '{ident}'.", param="id")

    async def create(self, body: Any) -> StoredModel:
        values, spelled = self._parse(body)
        spec = _validate(_merge_patch({}, values), spelled)
        await self._check(spec, spelled, None)
        try:
            row = await self._store.add(spec.alias, spec.stored(), at=self._clock(), active=spec.active,
                                        is_default=spec.default)
        except DuplicateAliasError:
            raise self._duplicate(spec.alias, spelled) from None
        await self._applied()
        return row

    async def update(self, ident: str, body: Any) -> StoredModel:
        """A partial update (JSON merge patch: null removes a field)."""
        values, spelled = self._parse(body)
        row = await self._existing(ident)
        spec = _validate(_merge_patch(_fields(row), values), spelled)
        await self._check(spec, spelled, row.id)
        try:
            updated = await self._store.update(row.id, alias=spec.alias, config=spec.stored(), active=spec.active,
                                               is_default=spec.default, at=self._clock())
        except DuplicateAliasError:
            raise self._duplicate(spec.alias, spelled) from None
        if updated is None:
            raise NotFoundError(f"No stored model with id or alias '{ident}'.", param="id")
        await self._applied()
        return updated

    async def delete(self, ident: str) -> StoredModel:
        row = await self._existing(ident)
        if not await self._store.delete(row.id, self._clock()):
            raise NotFoundError(f"No stored model with id or alias '{ident}'.", param="id")
        await self._applied()
        return row

    @staticmethod
    def _parse(body: Any) -> tuple[dict[str, Any], dict[str, str]]:
        if not isinstance(body, Mapping):
            raise BadRequestError("The request body must be a JSON object.")
        return _normalize(body)

    @staticmethod
    def _duplicate(alias: str, spelled: Mapping[str, str]) -> BadRequestError:
        return BadRequestError(f"A stored model with the alias '{alias}' already exists.",
                               param=spelled.get("alias", "alias"), code="duplicate_alias")

    async def _applied(self) -> None:
        """After a write through this replica: apply it now rather than at the next poll."""
        try:
            await self.reload()
        except Exception:
            log.warning("model catalog reload after a change failed; the next poll retries", exc_info=True)

    async def _check(self, spec: ModelSpec, spelled: Mapping[str, str], own_id: str | None) -> None:
        """Cross-references (provider, fallbacks), capabilities and the vault credential."""
        try:
            config = spec.to_config()
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            raise BadRequestError(f"Invalid model: {err['msg']}", param=_param(err["loc"], spelled) or None) from None
        others: list[ModelConfig] = []
        for row in await self._store.list():
            if row.id == own_id or row.alias in self._file or row.alias == spec.alias:
                continue
            try:
                others.append(spec_of(row).to_config())
            except ValidationError:
                continue
        models = [*(m for m in self._file.values() if m.alias != spec.alias), *others, config]
        mine = len(models) - 1
        for loc, message in model_problems(models, self._settings.providers):
            if loc and loc[0] == mine:
                param = _param(_problem_param(loc, message).split("."), spelled)
                raise BadRequestError(f"Invalid model: {message}.", param=param)
        provider = self._settings.providers.get(spec.provider)
        ptype = provider.type if provider is not None else spec.provider
        assert provider is not None or ptype in PROVIDER_TYPES  # model_problems() refused it otherwise
        try:
            defaults_for(ptype).merged(config.capabilities)
        except ValueError as exc:
            param = "provider_settings.capabilities"
            raise BadRequestError(f"Invalid model: {exc}.", param=_param(param.split("."), spelled)) from None
        try:
            validate_drop(config.drop_params)
        except ValueError as exc:
            param = "provider_settings.drop_params"
            raise BadRequestError(f"Invalid model: {exc}.", param=_param(param.split("."), spelled)) from None
        if spec.credential is not None:
            await self._check_credential(spec.credential, spelled)
        try:
            RoutingTable(self._settings, extra_models=[config])
        except ConfigError as exc:
            raise BadRequestError(f"Invalid model: {exc}.") from None

    async def _check_credential(self, name: str, spelled: Mapping[str, str]) -> None:
        param = spelled.get("credential", "credential")
        if self._secrets is None:
            raise BadRequestError("The credential vault is not configured (set master_key), so 'credential' "
                                  "cannot be used.", param=param)
        if name not in await self._secrets():
            raise BadRequestError(f"No active credential named '{name}' in the vault; add it there first.",
                                  param=param, code="unknown_credential")
