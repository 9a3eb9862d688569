"""Watches what upstreams have loaded in memory (Ollama's /api/ps) and exports it as gauges.

Polled in the background, so a Prometheus scrape never waits on an upstream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from switchyard.core.ports import MetricsSink, Provider, ReportsRunningModels
from switchyard.errors import GatewayError
from switchyard.service.background import stop_task

__all__ = ["FleetWatcher"]

log = logging.getLogger("switchyard.fleet")


class FleetWatcher:
    def __init__(self, providers: Mapping[str, Provider], metrics: MetricsSink, interval: float) -> None:
        self._watched = {n: p for n, p in providers.items() if isinstance(p, ReportsRunningModels)}
        self._metrics = metrics
        self._interval = interval
        self._seen: dict[str, set[str]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._watched and self._interval > 0:
            self._task = asyncio.create_task(self._loop(), name="switchyard-fleet-watch")

    async def aclose(self) -> None:
        await stop_task(self._task)
        self._task = None

    async def _loop(self) -> None:
        while True:
            await self.poll()
            await asyncio.sleep(self._interval)

    async def poll(self) -> None:
        for name, provider in self._watched.items():
            try:
                running = await asyncio.wait_for(provider.running_models(), self._interval + 5)
            except (GatewayError, TimeoutError) as exc:
                log.debug("could not read loaded models of %s: %s", name, exc)
                continue
            now = {str(m["name"]): m for m in running}
            for gone in self._seen.get(name, set()) - now.keys():
                self._metrics.model_unloaded(name, gone)
            for model, info in now.items():
                self._metrics.loaded_bytes.labels(name, model).set(float(str(info.get("size") or 0)))
                self._metrics.loaded_vram_bytes.labels(name, model).set(float(str(info.get("size_vram") or 0)))
            self._seen[name] = set(now)
