"""Models managed over /admin/models: stored in the database, merged with the YAML file's, live.

The API record, its spellings and its errors are in ``protocol/admin/models.py``. Each change
through :meth:`ModelCatalog.create`, :meth:`~ModelCatalog.update` or :meth:`~ModelCatalog.delete`
is recorded in the audit log (the body as sent, scrubbed of anything secret).

Merging: the file's models are served as configured; a stored model whose alias the file also
defines is kept but not served (the file wins), and the admin API says so (``shadowed_by_file``).

Every replica polls :meth:`SqlModelStore.revision` (one index read) each interval and, when it
changed, reloads the stored models, rebuilds the routing table and swaps it into the gateway.
Writes through this replica apply at once. A stored model that cannot be built (say its vault
credential was deleted) is logged and skipped; it never takes the server down.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from pydantic import ValidationError

from switchyard.admin.audit import Actor, AuditLog
from switchyard.core.capabilities import defaults_for, validate_drop
from switchyard.core.models import DuplicateAliasError, StoredModel
from switchyard.core.ports import ModelStore
from switchyard.errors import BadRequestError, NotFoundError
from switchyard.protocol.admin import merge_patch
from switchyard.protocol.admin.models import (
    ModelSpec,
    normalize,
    record_fields,
    spec_of,
    spelled_param,
    validate_model,
)
from switchyard.service.background import every, stop_task
from switchyard.service.routing import RoutingTable
from switchyard.settings import PROVIDER_TYPES, ConfigError, ModelConfig, Settings, model_problems

__all__ = ["ModelCatalog", "RoutingSink", "SecretsSource"]

log = logging.getLogger("switchyard.models")

SecretsSource = Callable[[], Awaitable[Mapping[str, str]]]
_RETRY_PROBLEMS_S = 10.0  # how often rows that failed to build are retried (a credential may appear)


class RoutingSink(Protocol):
    """Where a rebuilt routing table goes: the gateway."""

    def apply_routing(self, table: RoutingTable) -> None: ...


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
        audit: AuditLog,
        interval: float | None = None,
        secrets: SecretsSource | None = None,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self._store = store
        self._settings = settings
        self._gateway = gateway
        self._audit = audit
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
    async def list(self) -> builtins.list[StoredModel]:
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

    async def create(self, body: Any, *, actor: Actor) -> StoredModel:
        values, spelled = self._parse(body)
        spec = validate_model(merge_patch({}, values), spelled)
        await self._check(spec, spelled, None)
        try:
            row = await self._store.add(spec.alias, spec.stored(), at=self._clock(), active=spec.active,
                                        is_default=spec.default)
        except DuplicateAliasError:
            raise self._duplicate(spec.alias, spelled) from None
        self._audit.action(actor, "model.create", "model", row.id, body)  # scrubbed of api_key and the like
        await self._applied()
        return row

    async def update(self, ident: str, body: Any, *, actor: Actor) -> StoredModel:
        """A partial update (JSON merge patch: null removes a field)."""
        values, spelled = self._parse(body)
        row = await self._existing(ident)
        spec = validate_model(merge_patch(record_fields(row), values), spelled)
        await self._check(spec, spelled, row.id)
        try:
            updated = await self._store.update(row.id, alias=spec.alias, config=spec.stored(), active=spec.active,
                                               is_default=spec.default, at=self._clock())
        except DuplicateAliasError:
            raise self._duplicate(spec.alias, spelled) from None
        if updated is None:
            raise NotFoundError(f"No stored model with id or alias '{ident}'.", param="id")
        self._audit.action(actor, "model.update", "model", updated.id, body)
        await self._applied()
        return updated

    async def delete(self, ident: str, *, actor: Actor) -> StoredModel:
        row = await self._existing(ident)
        if not await self._store.delete(row.id, self._clock()):
            raise NotFoundError(f"No stored model with id or alias '{ident}'.", param="id")
        self._audit.action(actor, "model.delete", "model", row.id, {"alias": row.alias})
        await self._applied()
        return row

    @staticmethod
    def _parse(body: Any) -> tuple[dict[str, Any], dict[str, str]]:
        if not isinstance(body, Mapping):
            raise BadRequestError("The request body must be a JSON object.")
        return normalize(body)

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
            param = spelled_param(err["loc"], spelled) or None
            raise BadRequestError(f"Invalid model: {err['msg']}", param=param) from None
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
                param = spelled_param(_problem_param(loc, message).split("."), spelled)
                raise BadRequestError(f"Invalid model: {message}.", param=param)
        provider = self._settings.providers.get(spec.provider)
        ptype = provider.type if provider is not None else spec.provider
        assert provider is not None or ptype in PROVIDER_TYPES  # model_problems() refused it otherwise
        try:
            defaults_for(ptype).merged(config.capabilities)
        except ValueError as exc:
            param = "provider_settings.capabilities"
            raise BadRequestError(f"Invalid model: {exc}.", param=spelled_param(param.split("."), spelled)) from None
        try:
            validate_drop(config.drop_params)
        except ValueError as exc:
            param = "provider_settings.drop_params"
            raise BadRequestError(f"Invalid model: {exc}.", param=spelled_param(param.split("."), spelled)) from None
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
