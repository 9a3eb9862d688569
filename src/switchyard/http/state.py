"""What handlers reach through ``request.app.state.services``; built by app.create_app."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import Request

from switchyard.observability.metrics import Metrics
from switchyard.service.gateway import Gateway
from switchyard.service.keys import KeyService
from switchyard.settings import Settings

__all__ = ["Services", "services"]


@dataclass
class Services:
    settings: Settings
    gateway: Gateway
    keys: KeyService
    metrics: Metrics
    ping_store: Callable[[], Awaitable[None]]


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc
