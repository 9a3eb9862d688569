"""Opening the stores and the key service: shared by the server and the CLI.

The CLI's ``keys`` and ``usage`` commands work on the store directly, with the server down,
so they need exactly what the server uses: the same database URL and the same HMAC secret.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from switchyard.admin import Admin, CredentialAdmin, KeyAdmin, TeamAdmin
from switchyard.admin.audit import AuditLog
from switchyard.admin.teams import TeamService
from switchyard.admin.vault import Vault
from switchyard.service.keys import KeyService
from switchyard.service.routing import RoutingTable
from switchyard.settings import ConfigError, Settings
from switchyard.store import Database, SqlKeyStore, SqlUsageStore, ensure_schema
from switchyard.store.audit import SqlAuditStore
from switchyard.store.console_sessions import SqlConsoleSessionStore
from switchyard.store.credentials import SqlCredentialStore
from switchyard.store.models import SqlModelStore
from switchyard.store.responses import SqlResponseStore
from switchyard.store.teams import SqlTeamStore

__all__ = ["Runtime", "check_credentials", "open_runtime", "server_secret"]

SECRET_FILE = "secret.key"  # noqa: S105 - a file name, not a secret


def server_secret(settings: Settings) -> bytes:
    """The HMAC secret: from settings, else generated once into the data dir (mode 0600)."""
    if settings.secret_key is not None:
        value = settings.secret_key.get_secret_value()
        if len(value) < 32:
            raise ConfigError("secret_key must be at least 32 characters")
        return value.encode()
    path = Path(settings.data_dir) / SECRET_FILE
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            with open(path, "x", encoding="ascii", opener=lambda p, f: os.open(p, f, 0o600)) as fh:
                fh.write(secrets.token_hex(32))
        except FileExistsError:
            pass
    value = path.read_text(encoding="ascii").strip()
    if len(value) < 32:
        raise ConfigError(f"{path} is damaged: the secret is shorter than 32 characters")
    return value.encode()


@dataclass
class Runtime:
    settings: Settings
    database: Database
    keys: KeyService
    usage: SqlUsageStore
    vault: Vault
    teams: TeamService
    audit: AuditLog  # not started here: the CLI's entries are written when the runtime closes
    admin: Admin  # what the CLI's and the admin API's commands call

    @property
    def models(self) -> SqlModelStore:
        """Models stored over /admin/models (the store holds no state beyond the engine)."""
        return SqlModelStore(self.database.engine)

    @property
    def responses(self) -> SqlResponseStore:
        """Stored Responses API responses (sealed content; the store holds no state beyond the engine)."""
        return SqlResponseStore(self.database.engine)

    @property
    def console_sessions(self) -> SqlConsoleSessionStore:
        """Web console sessions (the store holds no state beyond the engine)."""
        return SqlConsoleSessionStore(self.database.engine)

    async def spent(self, scope: str, since: datetime | None) -> float:
        """USD spent by a budget's scope (``key:<id>`` or ``team:<id>``) since ``since``, from the
        usage rollups: where budgets start from."""
        if scope.startswith("team:"):
            team = scope.removeprefix("team:")
            keys = SqlKeyStore(self.database.engine)
            members = [k.id for k in await keys.list(include_revoked=True) if k.team_id == team]
            return await self.usage.spent_by_keys(members, since)
        return await self.usage.spent(scope, since)

    async def aclose(self) -> None:
        await self.audit.aclose()
        await self.database.dispose()


async def open_runtime(settings: Settings) -> Runtime:
    """Apply migrations if needed and open the stores."""
    if settings.database_url is None:
        Path(settings.data_dir).mkdir(mode=0o700, parents=True, exist_ok=True)  # noqa: ASYNC240 - once, at start
    database = Database.create(settings.resolved_database_url)
    try:
        await ensure_schema(database.engine)
    except BaseException:
        await database.dispose()
        raise
    team_store = SqlTeamStore(database.engine)
    keys = KeyService(
        SqlKeyStore(database.engine),
        server_secret(settings),
        static_keys=[k.get_secret_value() for k in settings.api_keys],
        refresh_interval=settings.key_refresh_interval,
        teams=team_store,
    )
    master = settings.master_key.get_secret_value() if settings.master_key is not None else None
    vault = Vault(SqlCredentialStore(database.engine), master, flush_interval=settings.key_refresh_interval)
    teams = TeamService(team_store, keys)
    audit = AuditLog(SqlAuditStore(database.engine), settings.usage_flush_interval)
    admin = Admin(keys=KeyAdmin(keys, audit), teams=TeamAdmin(teams, audit), credentials=CredentialAdmin(vault, audit),
                  audit=audit)
    return Runtime(settings=settings, database=database, keys=keys, usage=SqlUsageStore(database.engine),
                   vault=vault, teams=teams, audit=audit, admin=admin)


async def check_credentials(settings: Settings, vault: Vault) -> None:
    """Refuse to start when the file refers to vault credentials that cannot be used."""
    names = settings.credential_references()
    if not names:
        return
    if not vault.configured:
        raise ConfigError(f"credential '{sorted(names)[0]}' is used, but no master key is set "
                          "(SWITCHYARD_MASTER_KEY) to decrypt the vault")
    RoutingTable(settings, secrets=await vault.secrets())  # names a credential that is missing or inactive


if TYPE_CHECKING:
    from switchyard.core.ports import (
        AuditStore,
        ConsoleSessionStore,
        KeyStore,
        ModelStore,
        ResponseStore,
        TeamStore,
        UsageStore,
    )
    from switchyard.store.engine import AsyncEngine

    def _stores_implement_their_ports(engine: AsyncEngine) -> tuple[KeyStore, TeamStore, UsageStore, AuditStore,
                                                                    ModelStore, ResponseStore, ConsoleSessionStore]:
        """(For mypy: each SQL store is checked against its port in core/ports.py.)"""
        return (SqlKeyStore(engine), SqlTeamStore(engine), SqlUsageStore(engine), SqlAuditStore(engine),
                SqlModelStore(engine), SqlResponseStore(engine), SqlConsoleSessionStore(engine))
