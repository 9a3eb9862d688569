"""What handlers reach through ``request.app.state.services``; built by app.create_app."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from starlette.requests import Request

from switchyard.admin import Admin
from switchyard.admin.catalog import ModelCatalog
from switchyard.admin.vault import Vault
from switchyard.core.ports import UsageStore
from switchyard.core.usage import session_id
from switchyard.observability.metrics import Metrics
from switchyard.service.call import CallContext
from switchyard.service.console_sessions import ConsoleSessions
from switchyard.service.gateway import Gateway
from switchyard.service.keys import KeyService
from switchyard.service.responses import ResponseLog
from switchyard.settings import Settings

if TYPE_CHECKING:
    from switchyard.local.manager import ModelManager

__all__ = ["SESSION_HEADERS", "Services", "call_context", "services"]

SESSION_HEADERS = (b"x-claude-code-session-id", b"session-id", b"session_id", b"x-session-id")
"""Headers naming the client's agent session, first found wins: Claude Code's, Codex CLI's
(``session-id``; ``session_id`` before 0.1xx, its conversation id) and a generic one for other
clients. Kept on usage rows."""
_SESSION_HEADERS = frozenset(SESSION_HEADERS)
_name = itemgetter(0)


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
    console_sessions: ConsoleSessions | None = None  # web console sessions (/ui), in the database
    # under serve's supervisor: its pid and restarts ({"pid", "restarts", "last_crash"}), read now
    supervision: Callable[[], dict[str, Any] | None] | None = None
    # USD spent by a budget's scope (key:<id>, team:<id>) since a time, from the usage rollups
    spent: Callable[[str, datetime | None], Awaitable[float]] | None = None


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


def call_context(request: Request) -> CallContext:
    """This request's CallContext, left in the scope for the edge middleware's overhead figure."""
    state = request.scope["state"]
    ctx = CallContext(state["request_id"])
    headers = request.scope["headers"]
    if not _SESSION_HEADERS.isdisjoint(map(_name, headers)):  # most requests name no session: one C-level pass
        found = {name: value for name, value in headers if name in _SESSION_HEADERS}
        raw = next(found[name] for name in SESSION_HEADERS if name in found)
        ctx.session_id = session_id(raw.decode("latin-1"))
    state["call"] = ctx
    return ctx
