"""The model manager: which local models are in memory, within a byte budget.

    lease(name) ──▶ loaded? ── yes ──▶ active += 1 ──▶ engine
                      │ no
                      ▼  (one load at a time)
                 make room: evict idle, unpinned models, least recently used first
                      │ cannot fit (the rest is serving or pinned) ──▶ 503
                      ▼
                 load in a thread, measure the footprint ──▶ over budget after all? evict more, or 503

A model that is serving (active > 0) is never evicted. Idle models unload when their keep-alive
passes (``expire``, run by a reaper task; the clock is injected so tests can move time).
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from types import EllipsisType
from typing import Any

from switchyard.errors import GatewayError, NotFoundError, ServiceUnavailableError
from switchyard.local.context import declared_context_length, gguf_metadata
from switchyard.local.engine import Engine
from switchyard.local.kvcache import kv_bytes_per_token
from switchyard.local.spec import LocalModelSpec

__all__ = ["ManagedModel", "ModelManager", "estimate_bytes", "load_engine"]

log = logging.getLogger("switchyard.local")

ENGINE_MODULES = {
    "llamacpp": "switchyard.local.engines.llamacpp",
    "transformers": "switchyard.local.engines.transformers",
    "bert": "switchyard.local.engines.bert",
    "sentence_transformers": "switchyard.local.engines.sentence",
}
# The pip extra that installs each engine's libraries.
ENGINE_EXTRAS = {"llamacpp": "local", "transformers": "transformers", "bert": "local",
                 "sentence_transformers": "sentence-transformers"}
_MiB = 1024 * 1024


def load_engine(spec: LocalModelSpec) -> Engine:
    """Blocking: import the engine's module (and its library) and load the model."""
    try:
        module = import_module(ENGINE_MODULES[spec.engine])
        engine: Engine = module.load(spec)
    except ImportError as exc:
        extra = ENGINE_EXTRAS[spec.engine]
        raise ServiceUnavailableError(
            f"The {spec.engine} engine is not installed ({exc.name or exc} is missing); "
            f"install the {extra} extra: pip install 'switchyard[{extra}]'.", code="engine_unavailable",
        ) from None
    return engine


def estimate_bytes(spec: LocalModelSpec) -> int:
    """What a model will take before it is loaded: the size of its weights on disk (0 when it
    comes from a hub), plus a GGUF model's KV cache for all its slots. Replaced by the measured
    footprint once loaded."""
    return disk_bytes(spec) + kv_cache_bytes(spec)


def disk_bytes(spec: LocalModelSpec) -> int:
    """The size of a model's weights on disk (0 when it comes from a hub)."""
    path = Path(spec.source)
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*")
                   if p.is_file() and p.suffix in {".safetensors", ".bin", ".gguf", ".pt"})
    return 0


def kv_cache_bytes(spec: LocalModelSpec) -> int:
    """A GGUF model's KV cache for all its slots, sized before load (0 for other models)."""
    path = Path(spec.source)
    return _kv_estimate(spec, path) if path.is_file() else 0


def _engine_stats(engine: Engine | None) -> dict[str, Any]:
    """What an engine reports of itself (the llama.cpp engine: slots, prefix cache, throughput)."""
    stats = getattr(engine, "stats", None)
    return dict(stats()) if callable(stats) else {}


def _kv_estimate(spec: LocalModelSpec, path: Path) -> int:
    """A llama.cpp model's KV cache, all slots, from its GGUF header (0 when it does not say)."""
    if spec.engine != "llamacpp":
        return 0
    try:
        per_token = kv_bytes_per_token(gguf_metadata(path)) or 0
    except (OSError, ValueError, struct.error):
        return 0
    return per_token * (declared_context_length(spec) or 0) * spec.parallel


@dataclass(frozen=True, slots=True)
class ManagedModel:
    spec: LocalModelSpec
    pinned: bool = False
    preload: bool = False
    keep_alive: float | None = 300.0  # seconds idle before unloading; None: never
    max_tokens: int | None = None  # completion limit when a request sets none (None: the context's room)
    max_tool_calls: int = 8  # function calls one answer may hold (when the request allows parallel calls)


@dataclass(slots=True)
class _Slot:
    model: ManagedModel
    keep_alive: float | None
    engine: Engine | None = None
    state: str = "unloaded"  # unloaded | loading | loaded
    memory_bytes: int = 0
    active: int = 0
    last_used: float = 0.0
    loads: int = 0
    load_seconds: float = 0.0
    waiters: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class ModelManager:
    def __init__(
        self,
        models: Sequence[ManagedModel],
        budget_bytes: int,
        *,
        max_loaded: int | None = None,
        loader: Callable[[LocalModelSpec], Engine] = load_engine,
        estimate: Callable[[LocalModelSpec], int] = estimate_bytes,
        clock: Callable[[], float] = time.monotonic,
        reap_interval: float = 1.0,
        on_busy: Callable[[Sequence[str]], None] | None = None,
    ) -> None:
        self._slots = {m.spec.name: _Slot(m, m.keep_alive) for m in models}
        self.budget = budget_bytes
        self.max_loaded = max_loaded
        self._loader = loader
        self._estimate = estimate
        self._clock = clock
        self._reap_interval = reap_interval
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[Any]] = []
        self.evictions = 0
        self._declared: dict[str, int | None] = {}
        self.on_busy = on_busy  # told the models loading or serving, whenever that set changes
        self._busy: tuple[str, ...] = ()

    # --- queries -------------------------------------------------------------------------

    def __contains__(self, name: object) -> bool:
        return name in self._slots

    @property
    def names(self) -> list[str]:
        return list(self._slots)

    def spec(self, name: str) -> LocalModelSpec:
        return self._get(name).model.spec

    def model(self, name: str) -> ManagedModel:
        return self._get(name).model

    @property
    def used(self) -> int:
        return sum(s.memory_bytes for s in self._slots.values() if s.state != "unloaded")

    def loaded(self) -> list[str]:
        return [n for n, s in self._slots.items() if s.state == "loaded"]

    def context_length(self, name: str) -> int | None:
        """The tokens its context holds: the loaded engine's figure, else what its files declare."""
        slot = self._get(name)
        if slot.engine is not None:
            return int(slot.engine.context_length)
        if name not in self._declared:
            self._declared[name] = declared_context_length(slot.model.spec)
        return self._declared[name]

    def status(self) -> dict[str, Any]:
        now = self._clock()
        models = []
        for name, slot in self._slots.items():
            idle = slot.state == "loaded" and slot.active == 0
            expires = None
            if idle and slot.keep_alive is not None and not slot.model.pinned:
                expires = max(0.0, slot.last_used + slot.keep_alive - now)
            models.append({
                "id": name,
                "engine": slot.model.spec.engine,
                "state": slot.state,
                "memory_bytes": slot.memory_bytes if slot.state != "unloaded" else 0,
                "pinned": slot.model.pinned,
                "active": slot.active,
                "queued": slot.waiters,
                "keep_alive_seconds": slot.keep_alive,
                "expires_in_seconds": expires,
                "idle_seconds": (now - slot.last_used) if idle else None,
                "last_used_at": round(time.time() - (now - slot.last_used), 3) if slot.loads else None,
                "loads": slot.loads,
                "load_seconds": round(slot.load_seconds, 3),
                **slot.extra,
                **_engine_stats(slot.engine),
            })
        used = self.used
        return {
            "memory_budget_bytes": self.budget,
            "memory_used_bytes": used,
            "memory_free_bytes": max(0, self.budget - used),
            "max_loaded_models": self.max_loaded,
            "evictions": self.evictions,
            "models": models,
        }

    def set_queue_depth(self, name: str, waiting: int) -> None:
        """The gateway's queue for this model (shown in status)."""
        if name in self._slots:
            self._slots[name].waiters = waiting

    # --- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Preload what asks for it (in the background: serving starts at once) and start the reaper."""
        for name, slot in self._slots.items():
            if slot.model.preload:
                self._tasks.append(asyncio.create_task(self._preload(name), name=f"switchyard-preload-{name}"))
        self._tasks.append(asyncio.create_task(self._reap(), name="switchyard-model-reaper"))

    async def _preload(self, name: str) -> None:
        try:
            await self.load(name)
        except GatewayError as exc:
            log.warning("could not preload %s: %s", name, exc.message)

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(self._reap_interval)
            try:
                await self.expire()
            except Exception:  # the reaper must outlive one bad unload
                log.exception("model reaper failed")

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        async with self._lock:
            for slot in self._slots.values():
                if slot.engine is not None:
                    await self._close(slot)

    # --- leases ----------------------------------------------------------------------------

    @asynccontextmanager
    async def lease(self, name: str, keep_alive: float | EllipsisType | None = ...) -> AsyncIterator[Engine]:
        """The model's engine, loaded if needed, held against eviction until the block ends.
        ``keep_alive`` (seconds, or None for ever) replaces the model's for this and later idles."""
        slot = self._get(name)
        if getattr(slot.engine, "failed", None) is not None:
            await self._drop_failed(name)
        if slot.engine is None or slot.state != "loaded":
            await self._ensure_loaded(name)
        engine = slot.engine
        assert engine is not None  # _ensure_loaded raised otherwise; no await since
        slot.active += 1
        if self.on_busy is not None:
            self._note_busy()
        if not isinstance(keep_alive, EllipsisType):
            slot.keep_alive = keep_alive
        try:
            yield engine
        finally:
            slot.active -= 1
            if self.on_busy is not None:
                self._note_busy()
            slot.last_used = self._clock()
            if slot.active == 0 and slot.keep_alive == 0 and not slot.model.pinned:
                task = asyncio.create_task(self._unload_if_idle(name))
                self._tasks.append(task)
                task.add_done_callback(self._forget)

    async def _drop_failed(self, name: str) -> None:
        """An engine that stopped serving (a crashed scheduler) is unloaded, to be loaded again."""
        async with self._lock:
            slot = self._slots[name]
            failed = getattr(slot.engine, "failed", None)
            if slot.engine is not None and failed is not None:
                log.error("%s failed (%s: %s); it reloads now", name, type(failed).__name__, failed)
                await self._close(slot)

    def _forget(self, task: asyncio.Task[Any]) -> None:
        if task in self._tasks:
            self._tasks.remove(task)

    async def _unload_if_idle(self, name: str) -> None:
        async with self._lock:
            slot = self._slots[name]
            if slot.engine is not None and slot.active == 0:
                await self._close(slot)

    # --- load / unload -------------------------------------------------------------------

    async def load(self, name: str, keep_alive: float | EllipsisType | None = ...) -> dict[str, Any]:
        """Load (or keep) a model; its idle clock restarts."""
        slot = self._get(name)
        if not isinstance(keep_alive, EllipsisType):
            slot.keep_alive = keep_alive
        await self._ensure_loaded(name)
        slot.last_used = self._clock()
        return {"memory_bytes": slot.memory_bytes, "load_seconds": round(slot.load_seconds, 3)}

    async def unload(self, name: str) -> bool:
        """Unload a model now, if it is loaded and idle. Serving models get 409-like refusal."""
        slot = self._get(name)
        async with self._lock:
            if slot.engine is None:
                return False
            if slot.active:
                raise ServiceUnavailableError(
                    f"Model '{name}' is serving {slot.active} request(s); try again when it is idle.",
                    code="model_busy", retry_after=1,
                )
            await self._close(slot)
            return True

    async def expire(self) -> list[str]:
        """Unload idle, unpinned models whose keep-alive has passed."""
        now = self._clock()
        due = [n for n, s in self._slots.items()
               if s.engine is not None and s.active == 0 and not s.model.pinned
               and s.keep_alive is not None and now - s.last_used >= s.keep_alive]
        gone = []
        for name in due:
            async with self._lock:
                slot = self._slots[name]
                if slot.engine is not None and slot.active == 0 and now - slot.last_used >= (slot.keep_alive or 0):
                    await self._close(slot)
                    gone.append(name)
        return gone

    async def _ensure_loaded(self, name: str) -> None:
        slot = self._slots[name]
        async with self._lock:
            if slot.engine is not None:
                return
            spec = slot.model.spec
            need = self._estimate(spec)
            await self._make_room(name, need)
            slot.state = "loading"
            slot.memory_bytes = need
            started = time.perf_counter()
            try:
                if self.on_busy is not None:
                    self._note_busy()
                engine = await asyncio.to_thread(self._loader, spec)
            except GatewayError:
                slot.state, slot.memory_bytes = "unloaded", 0
                raise
            except Exception as exc:
                slot.state, slot.memory_bytes = "unloaded", 0
                log.warning("loading %s failed: %s: %s", name, type(exc).__name__, exc)
                raise ServiceUnavailableError(
                    f"Model '{name}' could not be loaded: {type(exc).__name__}: {exc}", code="model_load_failed",
                ) from None
            finally:
                if self.on_busy is not None and slot.state != "loading":
                    self._note_busy()
            slot.load_seconds = time.perf_counter() - started
            slot.engine = engine
            slot.memory_bytes = max(int(engine.footprint_bytes), 1)
            slot.state = "loaded"
            if self.on_busy is not None:
                self._note_busy()
            slot.loads += 1
            slot.last_used = self._clock()
            if self.used > self.budget:  # the estimate was low: make room now that we know
                try:
                    await self._make_room(name, slot.memory_bytes)
                except ServiceUnavailableError:
                    await self._close(slot)
                    raise
            log.info("loaded %s (%s, %.0f MiB) in %.2f s", name, spec.engine, slot.memory_bytes / _MiB,
                     slot.load_seconds)

    async def _make_room(self, name: str, need: int) -> None:
        """Evict idle, unpinned models (least recently used first) until ``need`` more bytes fit
        and the count cap allows one more. Called with the lock held."""
        if need > self.budget:
            raise ServiceUnavailableError(
                f"Model '{name}' needs about {need / _MiB:.0f} MiB, more than the whole memory budget "
                f"({self.budget / _MiB:.0f} MiB); raise --memory-budget.", code="insufficient_memory",
            )

        def over() -> bool:
            others = [s for n, s in self._slots.items() if n != name and s.state != "unloaded"]
            too_many = self.max_loaded is not None and len(others) >= self.max_loaded
            used = sum(s.memory_bytes for s in others)
            return too_many or used + need > self.budget

        while over():
            idle = [(s.last_used, n) for n, s in self._slots.items()
                    if n != name and s.engine is not None and s.active == 0 and not s.model.pinned]
            if not idle:
                busy = [n for n, s in self._slots.items() if n != name and s.state != "unloaded"]
                raise ServiceUnavailableError(
                    f"Model '{name}' (about {need / _MiB:.0f} MiB) does not fit: {self.used / _MiB:.0f} of "
                    f"{self.budget / _MiB:.0f} MiB are held by models that are serving or pinned "
                    f"({', '.join(busy)}).", code="insufficient_memory", retry_after=5,
                )
            _, victim = min(idle)
            log.info("evicting %s to make room for %s", victim, name)
            await self._close(self._slots[victim])
            self.evictions += 1

    async def _close(self, slot: _Slot) -> None:
        engine, slot.engine = slot.engine, None
        slot.state = "unloaded"
        slot.memory_bytes = 0
        if engine is not None:
            await asyncio.to_thread(engine.close)

    def _note_busy(self) -> None:
        """Tell ``on_busy`` the models loading or serving now, if that changed (it names them
        should the process die in native code)."""
        assert self.on_busy is not None
        busy = tuple(n for n, s in self._slots.items() if s.active or s.state == "loading")
        if busy != self._busy:
            self._busy = busy
            self.on_busy(busy)

    def _get(self, name: str) -> _Slot:
        slot = self._slots.get(name)
        if slot is None:
            raise NotFoundError(f"The model '{name}' is not a local model.", code="model_not_found")
        return slot


