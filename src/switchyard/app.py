"""The composition root: ``create_app(settings)`` builds everything in the lifespan.

Importing this module reads no environment and touches no disk.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from switchyard.core.ports import Provider
from switchyard.http.errors import exception_handlers
from switchyard.http.middleware import EdgeMiddleware
from switchyard.http.routes import routes
from switchyard.http.state import Services
from switchyard.observability.logging import configure_logging
from switchyard.observability.metrics import Metrics
from switchyard.providers import load_provider
from switchyard.runtime import open_runtime
from switchyard.service.accounting import UsageRecorder
from switchyard.service.gateway import Gateway
from switchyard.service.routing import RoutingTable
from switchyard.settings import Settings

__all__ = ["create_app", "worker_app"]


def create_app(settings: Settings) -> Starlette:
    routing = RoutingTable(settings)  # config errors surface before serving

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        runtime = await open_runtime(settings)
        providers: dict[str, Provider] = {name: load_provider(spec) for name, spec in routing.upstreams.items()}
        metrics = Metrics()
        recorder = UsageRecorder(runtime.usage, settings.usage_flush_interval)
        try:
            await runtime.keys.start()
            recorder.start()
            app.state.services = Services(
                settings=settings,
                gateway=Gateway(routing, providers, recorder, metrics),
                keys=runtime.keys,
                metrics=metrics,
                ping_store=runtime.usage.ping,
            )
            app.state.recorder = recorder
            app.state.started_at = int(time.time())
            yield
        finally:
            await recorder.aclose()
            await runtime.keys.aclose()
            await asyncio.gather(*(p.aclose() for p in providers.values()), return_exceptions=True)
            await runtime.aclose()

    middleware = [Middleware(EdgeMiddleware)]
    if settings.cors_allow_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_allow_origins,
                allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
                allow_headers=["authorization", "content-type", "x-api-key", "x-request-id"],
                expose_headers=["x-request-id", "retry-after"],
            )
        )
    return Starlette(
        routes=routes(),
        middleware=middleware,
        exception_handlers=exception_handlers,
        lifespan=lifespan,
    )


def worker_app() -> Starlette:
    """Factory for ``--workers N``: each worker rebuilds the settings its parent resolved."""
    settings = Settings.from_worker_environ()
    configure_logging(settings.log_level, settings.log_json)
    return create_app(settings)
