"""Operator state and the operator's actions: the model catalog, the credential vault, teams, the
audit log, and the admin side of API keys.

The edges (the admin HTTP routes and the CLI) parse a request into the admin API's JSON
(``protocol/admin``), make one call here, and render the answer. Each call validates, applies,
and writes the audit entry itself, so that no edge can forget it.
"""

from __future__ import annotations

from dataclasses import dataclass

from switchyard.admin.audit import CLI, Actor, AuditLog
from switchyard.admin.credentials import CredentialAdmin
from switchyard.admin.keys import KeyAdmin
from switchyard.admin.teams import TeamAdmin

__all__ = ["CLI", "Actor", "Admin", "AuditLog", "CredentialAdmin", "KeyAdmin", "TeamAdmin"]


@dataclass(frozen=True, slots=True)
class Admin:
    """What the edges call for keys, teams and credentials, and the audit log they all write
    (stored models: ``ModelCatalog``, which only a running server has)."""

    keys: KeyAdmin
    teams: TeamAdmin
    credentials: CredentialAdmin
    audit: AuditLog
