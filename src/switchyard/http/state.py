"""What handlers reach through ``request.app.state.services``; built by app.create_app."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from starlette.requests import Request

from switchyard.admin import Admin
from switchyard.admin.catalog import ModelCatalog
from switchyard.admin.vault import Vault
from switchyard.core.ports import UsageStore
from switchyard.observability.metrics import Metrics
from switchyard.service.call import CallContext
from switchyard.service.gateway import Gateway
from switchyard.service.keys import KeyService
from switchyard.service.responses import ResponseLog
from switchyard.settings import Settings

if TYPE_CHECKING:
    from switchyard.local.manager import ModelManager

__all__ = ["Services", "call_context", "services"]


@dataclass
class Services:
    settings: Settings
    gateway: Gateway
    keys: KeyService
    metrics: Metrics
    ping_store: Callable[[], Awaitable[None]]
    vault: Vault | None = None  # the credential vault (the internal decrypt route)
    catalog: ModelCatalog | None = None  # models stored over /admin/models
    admin: Admin | None = None  # keys, teams, credentials and the audit log (/admin/...)
    usage: UsageStore | None = None  # usage reports (/admin/usage)
    models: ModelManager | None = None  # local models (/v1/status, load and unload)
    responses: ResponseLog | None = None  # stored Responses API responses (/v1/responses)
    # USD spent by a budget's scope (key:<id>, team:<id>) since a time, from the usage rollups
    spent: Callable[[str, datetime | None], Awaitable[float]] | None = None


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


def call_context(request: Request) -> CallContext:
    """This request's CallContext, left in the scope for the edge middleware's overhead figure."""
    state = request.scope["state"]
    ctx = CallContext(state["request_id"])
    state["call"] = ctx
    return ctx
