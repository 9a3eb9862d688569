"""The composition root: ``create_app(settings)`` builds everything in the lifespan.

Importing this module reads no environment and touches no disk.
"""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, ExitStack, asynccontextmanager, contextmanager
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Route

from switchyard.admin.catalog import ModelCatalog
from switchyard.core.limits import BudgetLedger, Limiter
from switchyard.core.models import UpstreamSpec
from switchyard.core.ports import Provider
from switchyard.core.redaction import SECRETS
from switchyard.http.disconnect import DisconnectWatch
from switchyard.http.errors import exception_handlers
from switchyard.http.middleware import EdgeMiddleware
from switchyard.http.routes import routes
from switchyard.http.state import Services
from switchyard.limits.budgets import MemoryLedger, SpentSource
from switchyard.limits.rates import MemoryLimiter
from switchyard.observability.crashes import WorkerRecord, read_state
from switchyard.observability.logging import AccessLog, configure_logging
from switchyard.observability.metrics import Metrics
from switchyard.observability.tracing import Tracing, TracingMiddleware, TracingUnavailableError
from switchyard.providers import load_provider
from switchyard.runtime import check_credentials, open_runtime, server_secret
from switchyard.service.accounting import Accounting
from switchyard.service.attempt import Attempts
from switchyard.service.console_sessions import ConsoleSessions
from switchyard.service.fleet import FleetWatcher
from switchyard.service.gateway import Gateway
from switchyard.service.governance import Governance
from switchyard.service.key_events import KeyEvents
from switchyard.service.responses import ResponseLog
from switchyard.service.retention import UsageRetention
from switchyard.service.routing import LOCAL, RoutingTable
from switchyard.service.upstreams import Upstreams
from switchyard.service.usage import UsageRecorder
from switchyard.settings import ConfigError, Settings, WorkerShare

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from switchyard.local.provider import LocalProvider

__all__ = ["create_app", "worker_app", "worker_share"]


def create_app(settings: Settings, share: WorkerShare | None = None, record: WorkerRecord | None = None) -> Starlette:
    """The app; ``share``: what ``serve``'s supervisor shares with this worker (its record of
    restarts and, with several workers, every worker's metrics files and, without Redis, the
    limits host); ``record``: where this worker names the local models it is running, for the
    supervisor to report should it die in native code."""
    pooled = share if share is not None and share.pooled else None
    routing = RoutingTable(settings)  # config errors surface before serving
    tracing = None
    if settings.otel_endpoint:  # off: OpenTelemetry is never imported and no middleware is added
        try:
            tracing = Tracing(settings.otel_endpoint, settings.otel_service_name)
        except TracingUnavailableError as exc:
            raise ConfigError(str(exc)) from None

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:  # stops in the reverse order of starting, however far it got
            if tracing is not None:  # stopped last: usage matters more than spans if a collector is slow
                tracing.start()
                stack.push_async_callback(asyncio.to_thread, tracing.shutdown)  # sends the queued spans
            stack.callback(access_log.flush)
            runtime = await open_runtime(settings)
            stack.push_async_callback(runtime.aclose)
            local = _local_provider(settings, routing)  # models run in this process, if any

            def provider_for(spec: UpstreamSpec) -> Provider:
                return local if spec.type == LOCAL and local is not None else load_provider(spec)

            providers: dict[str, Provider] = {name: provider_for(spec) for name, spec in routing.upstreams.items()}
            metrics = Metrics(pooled.metrics_dir if pooled is not None else None)
            stack.callback(metrics.close)
            if local is not None:
                manager = local.manager
                metrics.watch_local(lambda: manager.status()["models"])
                if record is not None:
                    manager.on_busy = record.busy
            supervision = partial(read_state, share) if share is not None else None
            if supervision is not None:
                metrics.watch_restarts(supervision)
            retention = UsageRetention.from_settings(runtime.usage, settings)  # prunes raw rows; rollups stay
            responses = ResponseLog(runtime.responses, server_secret(settings))  # sealed at rest
            SECRETS.add(server_secret(settings), *(s.get_secret_value() for s in (
                settings.master_key, settings.secret_key, settings.internal_secret) if s is not None))
            responses_retention = UsageRetention(responses.store, settings.responses_max_rows,
                                                 timedelta(days=settings.responses_max_age_days), what="responses")
            # told of every batch written, so that under load it prunes as often as the ring needs
            recorder = UsageRecorder(runtime.usage, settings.usage_flush_interval, on_written=retention.note_written,
                                     on_dropped=metrics.usage_dropped.inc, on_tick=metrics.usage_tick)
            metrics.watch_usage(lambda: recorder.pending)
            redis = _open_redis(settings)  # one client: limits, budgets and key-change events
            if redis is not None:
                stack.push_async_callback(redis.aclose)
            limiter, ledger = _limit_engines(settings, redis, runtime.spent, pooled)
            governance = Governance(limiter, ledger)
            stack.push_async_callback(governance.aclose)
            key_events = KeyEvents(redis, runtime.keys.refresh) if redis is not None else None
            if key_events is not None:
                runtime.keys.on_change = key_events.publish
                stack.push_async_callback(key_events.aclose)
            attempts = Attempts(routing, metrics, on_credential_use=runtime.vault.note_use)
            upstreams = Upstreams(routing, providers, provider_factory=provider_for, cooldowns=attempts.cooldowns)
            stack.push_async_callback(upstreams.aclose)
            gateway = Gateway(upstreams, attempts, Accounting(recorder.record, metrics, governance))
            secrets = runtime.vault.secrets if runtime.vault.configured else None
            catalog = ModelCatalog(runtime.models, settings, gateway,  # /admin/models, polled on every replica
                                   audit=runtime.audit, secrets=secrets)
            runtime.admin.credentials.on_change = catalog.reload  # routing holds decrypted credentials
            fleet = FleetWatcher(providers, metrics, settings.loaded_models_poll_interval)

            await runtime.keys.start()
            stack.push_async_callback(runtime.keys.aclose)
            if key_events is not None:
                key_events.start()
            runtime.audit.start()
            stack.push_async_callback(runtime.audit.aclose)
            await runtime.vault.start()
            stack.push_async_callback(runtime.vault.aclose)
            await check_credentials(settings, runtime.vault)
            recorder.start()
            stack.push_async_callback(recorder.aclose)
            retention.start()
            stack.push_async_callback(retention.aclose)
            responses_retention.start()
            stack.push_async_callback(responses_retention.aclose)
            fleet.start()
            stack.push_async_callback(fleet.aclose)
            if local is not None:
                local.manager.start()  # stopped when its provider closes
            await catalog.start()
            stack.push_async_callback(catalog.aclose)
            app.state.services = Services(
                settings=settings,
                gateway=gateway,
                keys=runtime.keys,
                vault=runtime.vault,
                catalog=catalog,
                admin=runtime.admin,
                metrics=metrics,
                ping_store=runtime.usage.ping,
                usage=runtime.usage,
                spent=runtime.spent,
                models=local.manager if local is not None else None,
                responses=responses,
                console_sessions=ConsoleSessions(runtime.console_sessions, settings.ui_session_ttl, limiter,
                                                 settings.ui_sign_in_per_minute),
                supervision=supervision,
            )
            app.state.started_at = int(time.time())
            stack.callback(_unsettle_memory, _settle_memory())  # frozen objects are freed again at shutdown
            yield

    access_log = AccessLog(json=settings.log_json, worker=pooled is not None)
    middleware = [Middleware(EdgeMiddleware, access_log=access_log)]
    if tracing is not None:
        middleware.append(Middleware(TracingMiddleware, tracing=tracing))
    if settings.cors_allow_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_allow_origins,
                allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
                allow_headers=["authorization", "content-type", "x-api-key", "x-request-id"],
                expose_headers=["x-request-id", "retry-after", "x-switchyard-deployment", "x-switchyard-attempts",
                                "x-ratelimit-limit-requests", "x-ratelimit-remaining-requests",
                                "x-ratelimit-reset-requests", "x-ratelimit-limit-tokens",
                                "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens", "x-should-retry"],
            )
        )
    middleware.append(Middleware(DisconnectWatch))  # a client that leaves cancels its request's work
    app = Starlette(
        routes=[*routes(), *_internal_routes(settings)],
        middleware=middleware,
        exception_handlers=exception_handlers,
        lifespan=lifespan,
    )
    app.router.redirect_slashes = False  # routes match exactly: /health/ is an unknown path, never a redirect
    return app


# -- rate-limit and budget engines -------------------------------------------------------------
def _open_redis(settings: Settings) -> Redis | None:
    """The process's one Redis client, when Redis is configured (``redis`` is imported only then)."""
    if settings.redis_url is None:
        return None
    from switchyard.limits.redis_client import open_redis

    return open_redis(settings.redis_url, settings.limits_redis_timeout_ms / 1000)


def _limit_engines(settings: Settings, redis: Redis | None, spent: SpentSource,
                   share: WorkerShare | None = None) -> tuple[Limiter, BudgetLedger]:
    """In-process engines; with Redis, Redis engines on the shared client that fall back to
    in-process ones while it is unreachable (or refuse with 503, ``limits_fail_closed``); in a
    worker of ``serve --workers N`` without Redis, the limits host's engines (its supervisor
    owns the counters) behind the same fallback."""
    if redis is None:
        return (MemoryLimiter(), MemoryLedger(spent)) if share is None else _host_engines(settings, share, spent)
    from switchyard.limits.budgets_redis import RedisLedger
    from switchyard.limits.fallback import FallbackLedger, FallbackLimiter
    from switchyard.limits.rates_redis import RedisLimiter

    fail_closed, timeout = settings.limits_fail_closed, settings.limits_redis_timeout_ms / 1000
    limiter = FallbackLimiter(RedisLimiter(redis, timeout=timeout), MemoryLimiter(), fail_closed=fail_closed)
    # (each Redis call is bounded by the ledger; a seed read from the database, by its own
    # timeout: a database that hangs must not pass for a Redis that does)
    ledger = FallbackLedger(RedisLedger(redis, spent_source=spent, socket_timeout=timeout), MemoryLedger(spent),
                            fail_closed=fail_closed, timeout=None)
    limiter.share_outages_with(ledger)  # a request waits for a hung Redis once, not once per engine
    return limiter, ledger


def _host_engines(settings: Settings, share: WorkerShare, spent: SpentSource) -> tuple[Limiter, BudgetLedger]:
    """A worker's engines when its supervisor owns the counters (``limits/host.py``): one
    connection for both, behind the fallback circuit (per-process, or 503, while unreachable)."""
    from switchyard.limits.fallback import FallbackLedger, FallbackLimiter
    from switchyard.limits.host_client import HostLedger, HostLimiter, HostLink

    link = HostLink(share.limits_socket)
    fail_closed = settings.limits_fail_closed
    return (FallbackLimiter(HostLimiter(link), MemoryLimiter(), fail_closed=fail_closed),
            FallbackLedger(HostLedger(link, spent), MemoryLedger(spent), fail_closed=fail_closed))


def _local_provider(settings: Settings, routing: RoutingTable) -> LocalProvider | None:
    """The provider of local models, when any are configured (or bundled and installed)."""
    if not routing.local:
        return None
    from switchyard.local.build import build_manager
    from switchyard.local.provider import LocalProvider

    return LocalProvider(build_manager(settings, routing.local))


_YOUNG_GC_THRESHOLD = 10_000


def _settle_memory() -> tuple[int, int, int]:
    """After start-up: collect its garbage, and keep what it built (it lives as long as the
    process) out of every later GC pass.

    The young generation is then collected every 10,000 net container allocations instead of
    700. A request frees nearly everything it makes by reference counting, but with requests
    in flight the net count crosses 700 every few requests: with 8 in flight, a governed request
    paid about 36 µs of collections at the default and about 4 µs at 10,000 (measured with gc.callbacks on
    ``thread_time``; see docs/governance.md). Garbage cycles wait a little longer, which is
    a few MB at most.

    Returns the thresholds it replaced, for :func:`_unsettle_memory`.
    """
    gc.collect()
    gc.freeze()
    before = gc.get_threshold()
    gc.set_threshold(_YOUNG_GC_THRESHOLD, before[1], before[2])
    return before


def _unsettle_memory(threshold: tuple[int, int, int]) -> None:
    """At shut-down: hand what start-up froze back to the collector and restore the thresholds.

    Frozen objects are never collected, not even when the interpreter exits, so extension
    modules caught in a frozen cycle are never freed (torch's triton then prints nanobind
    leak reports at exit).
    """
    gc.unfreeze()
    gc.set_threshold(*threshold)


def _internal_routes(settings: Settings) -> list[Route]:
    """The credential-decrypt routes exist only with ``internal_secret`` set."""
    if settings.internal_secret is None:
        return []
    from switchyard.http.credentials import internal_routes

    return internal_routes(settings)


def worker_app() -> Starlette:
    """Factory for ``serve``'s workers: each rebuilds the settings its supervisor resolved."""
    share = WorkerShare.from_environ()
    record = None
    if share is not None:
        _die_with_parent(share)
        record = WorkerRecord(share)  # first: a crash from here on is reported with what was busy
    settings = Settings.from_worker_environ()
    configure_logging(settings.log_level, settings.log_json)
    return create_app(settings, share, record)


_PR_SET_PDEATHSIG = 1


def _die_with_parent(share: WorkerShare) -> None:
    """A worker gets SIGTERM (and drains) when its supervisor dies, however it dies: no orphan
    keeps serving on the supervisor's port (Linux; elsewhere a no-op)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    state = read_state(share)  # written before any worker starts
    if state is not None and state.get("pid") != os.getppid():  # it died before the call
        os.kill(os.getpid(), signal.SIGTERM)


@contextmanager
def worker_share(settings: Settings) -> Iterator[WorkerShare]:
    """In ``serve``'s supervisor, while its workers run: a fresh private directory for the
    record of their crashes and, with several workers, every worker's metrics files and,
    without Redis, the limits host, which owns the counters of every worker
    (``limits/host.py``); exported for the workers to find."""
    share = WorkerShare(Path(tempfile.mkdtemp(prefix="switchyard-")), pooled=settings.workers > 1)  # mode 0700
    try:
        if share.pooled:
            share.metrics_dir.mkdir()
        with ExitStack() as stack:
            if share.pooled and settings.redis_url is None:
                from switchyard.limits.host import serving

                try:
                    stack.enter_context(serving(share.limits_socket))
                except OSError as exc:  # a socket path too long for the system, most likely
                    raise ConfigError(f"cannot open the workers' limits socket {share.limits_socket}: "
                                      f"{exc.strerror or exc}; set TMPDIR to a short writable directory") from None
            share.export()
            stack.callback(share.withdraw)
            yield share
    finally:
        shutil.rmtree(share.root, ignore_errors=True)
