"""Prometheus metrics, on a registry owned by the app (no module globals).

The names, labels and meaning of every metric are listed in ``docs/metrics.md``; a test
scrapes ``/metrics`` and checks the two agree.

With ``serve --workers N`` every worker writes its figures to files in one directory that its
supervisor made (``multiprocess_dir``; Prometheus' client is then in its multiprocess mode,
chosen from ``PROMETHEUS_MULTIPROC_DIR`` when it is imported), and a scrape of any worker adds
up the files of all of them: counters and histograms summed over every worker that ever ran,
gauges over the workers alive (``multiprocess_mode``). A worker that stops takes its gauges
with it (``close``); one that was killed is forgotten at the next scrape.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from switchyard.observability.crashes import RestartsCollector
from switchyard.observability.local_engines import LocalEngineCollector, StatusSource

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)
_LIVE_FILE = re.compile(r"gauge_live\w+_(\d+)\.db")


class Metrics:
    def __init__(self, multiprocess_dir: Path | None = None) -> None:
        self._multiprocess_dir = multiprocess_dir
        self._scrape: CollectorRegistry | None = None
        if multiprocess_dir is not None:  # a scrape reads every worker's files
            self._scrape = CollectorRegistry()
            MultiProcessCollector(self._scrape, path=str(multiprocess_dir))  # type: ignore[no-untyped-call]
        # children by label values: labels() takes a lock and builds a key, so each set is resolved once
        self._children: dict[tuple[str, str, str, int], tuple[Any, ...]] = {}
        self._in_flight: dict[str, Any] = {}
        self._upstream_latency: dict[tuple[str, str, str], Any] = {}
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "switchyard_requests",
            "Requests by model, provider, endpoint and HTTP status.",
            ["model", "provider", "endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "switchyard_request_duration_seconds",
            "Whole-request latency (streams: until the last byte).",
            ["model", "provider", "endpoint", "status"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter(
            "switchyard_tokens",
            "Tokens by model, provider and type (prompt, completion).",
            ["model", "provider", "type"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "switchyard_requests_in_flight", "Requests being served now.", ["model"], registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.upstream_latency = Histogram(
            "switchyard_upstream_duration_seconds",
            "Time spent on the upstream call (streams: until its last byte).",
            ["model", "provider", "endpoint"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.ttft = Histogram(
            "switchyard_time_to_first_token_seconds",
            "Streams: from the upstream call until its first chunk.",
            ["model", "provider"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.overhead = Histogram(
            "switchyard_gateway_overhead_seconds",
            "Time the gateway itself added before the response started (total minus upstream wait).",
            buckets=_OVERHEAD_BUCKETS,
            registry=self.registry,
        )
        self.cost = Counter(
            "switchyard_cost_usd",
            "Spend at the configured per-model prices.",
            ["model", "provider"],
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "switchyard_queue_depth",
            "Requests waiting for a concurrency slot, by gate (an alias, or a provider whose cap is shared).",
            ["gate"],
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.loaded_bytes = Gauge(
            "switchyard_loaded_model_bytes",
            "Memory of each model an upstream has loaded now (Ollama /api/ps), in bytes.",
            ["provider", "model"],
            registry=self.registry,
            multiprocess_mode="livemostrecent",
        )
        self.loaded_vram_bytes = Gauge(
            "switchyard_loaded_model_vram_bytes",
            "The part of that memory on the GPU, in bytes.",
            ["provider", "model"],
            registry=self.registry,
            multiprocess_mode="livemostrecent",
        )
        self.cooldowns = Counter(
            "switchyard_upstream_cooldowns",
            "Times an upstream started cooling down after repeated failures.",
            ["provider"],
            registry=self.registry,
        )
        self.cooling_down = Gauge(
            "switchyard_upstream_cooling_down",
            "1 while an upstream is cooling down (skipped while another can serve), else 0.",
            ["provider"],
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.panic = Gauge(
            "switchyard_upstream_panic",
            "1 while an upstream cooling down serves anyway, as nothing else can, else 0.",
            ["provider"],
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.panic_requests = Counter(
            "switchyard_upstream_panic_requests",
            "Requests sent to an upstream cooling down, as nothing else could serve them.",
            ["provider"],
            registry=self.registry,
        )
        self.rejections = Counter(
            "switchyard_limiter_rejections",
            "Requests refused by a limiter (reason: queue_full, queue_timeout).",
            ["model", "reason"],
            registry=self.registry,
        )
        self.usage_pending = Gauge(
            "switchyard_usage_pending_rows",
            "Usage rows waiting to be written (they grow while the database is down or hung).",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.usage_dropped = Counter(
            "switchyard_usage_dropped_rows",
            "Usage rows dropped unwritten: the waiting rows passed their bound while the database was away.",
            registry=self.registry,
        )
        self.upstream_errors = Counter(
            "switchyard_upstream_errors",
            "Failed upstream calls, by provider and error code.",
            ["provider", "code"],
            registry=self.registry,
        )

    def observe(
        self, model: str, provider: str, endpoint: str, status: int, seconds: float, prompt: int, completion: int,
        cost: float = 0.0,
    ) -> None:
        key = (model, provider, endpoint, status)
        kids = self._children.get(key)
        if kids is None:
            code = str(status)
            kids = self._children[key] = (
                self.requests.labels(model, provider, endpoint, code),
                self.latency.labels(model, provider, endpoint, code),
                self.tokens.labels(model, provider, "prompt"),
                self.tokens.labels(model, provider, "completion"),
                self.cost.labels(model, provider),
            )
        requests, latency, prompt_tokens, completion_tokens, spend = kids
        requests.inc()
        latency.observe(seconds)
        if prompt:
            prompt_tokens.inc(prompt)
        if completion:
            completion_tokens.inc(completion)
        if cost:
            spend.inc(cost)

    def in_flight_for(self, model: str) -> Any:
        """The in-flight gauge of one alias."""
        gauge = self._in_flight.get(model)
        if gauge is None:
            gauge = self._in_flight[model] = self.in_flight.labels(model)
        return gauge

    def upstream_latency_for(self, model: str, provider: str, endpoint: str) -> Any:
        """The upstream-call histogram of one alias, provider and endpoint."""
        key = (model, provider, endpoint)
        hist = self._upstream_latency.get(key)
        if hist is None:
            hist = self._upstream_latency[key] = self.upstream_latency.labels(*key)
        return hist

    def cooling_down_changed(self, provider: str, cooling: bool) -> None:
        """An upstream (or deployment) started or stopped cooling down."""
        self.cooling_down.labels(provider).set(1 if cooling else 0)
        if cooling:
            self.cooldowns.labels(provider).inc()

    def panic_changed(self, provider: str, panic: bool) -> None:
        """An upstream (or deployment) that is cooling down started or stopped serving in panic mode."""
        self.panic.labels(provider).set(1 if panic else 0)

    def watch_usage(self, pending: Callable[[], int]) -> None:
        """``switchyard_usage_pending_rows`` reads ``pending()`` at each scrape (one process; with
        several workers a scrape reads files, so each worker writes its figure: ``usage_tick``)."""
        if self._multiprocess_dir is None:
            self.usage_pending.set_function(pending)

    def usage_tick(self, pending: int) -> None:
        """The usage writer's figure, every flush interval (several workers: summed at a scrape)."""
        if self._multiprocess_dir is not None:
            self.usage_pending.set(pending)

    def model_unloaded(self, provider: str, model: str) -> None:
        """An upstream no longer has ``model`` loaded: its series go (with several workers, whose
        files cannot lose a series, they read 0)."""
        for gauge in (self.loaded_bytes, self.loaded_vram_bytes):
            if self._multiprocess_dir is None:
                gauge.remove(provider, model)
            else:
                gauge.labels(provider, model).set(0)

    def watch_local(self, source: StatusSource) -> None:
        """Export the local engines' figures (slots, prefix cache, TTFT, tok/s), read from
        ``source`` (the model manager's status rows) at each scrape (with several workers: the
        scraped worker's own models)."""
        collector = LocalEngineCollector(source)
        self.registry.register(collector)
        if self._scrape is not None:
            self._scrape.register(collector)

    def watch_restarts(self, source: Callable[[], dict[str, Any] | None]) -> None:
        """Export ``switchyard_worker_restarts_total``, read from the supervisor's state
        (``source``) at each scrape."""
        collector = RestartsCollector(source)
        self.registry.register(collector)
        if self._scrape is not None:
            self._scrape.register(collector)

    def render(self) -> bytes:
        if self._scrape is None:
            return generate_latest(self.registry)
        self._forget_dead_workers()
        return generate_latest(self._scrape)

    def _forget_dead_workers(self) -> None:
        """Drop the gauges of workers that died without ``close`` (killed): counters stay."""
        assert self._multiprocess_dir is not None
        pids = {int(m.group(1)) for name in os.listdir(self._multiprocess_dir)
                if (m := _LIVE_FILE.fullmatch(name)) is not None}
        for pid in pids:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                mark_process_dead(pid, str(self._multiprocess_dir))  # type: ignore[no-untyped-call]
            except PermissionError:  # alive, as another user
                pass

    def close(self) -> None:
        """This process stops serving: its gauges leave the sum (its counters stay in it)."""
        if self._multiprocess_dir is not None:
            mark_process_dead(os.getpid(), str(self._multiprocess_dir))  # type: ignore[no-untyped-call]
