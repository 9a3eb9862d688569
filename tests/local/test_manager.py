"""The model manager on real engines (tiny transformers models built by the test): the byte
budget, LRU eviction, pinning, the count cap and keep-alive, with an injected clock."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from switchyard.errors import NotFoundError, ServiceUnavailableError
from switchyard.local.manager import ManagedModel, ModelManager, load_engine
from switchyard.local.spec import LocalModelSpec
from tests.local.tiny_models import build_tiny_llama


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def footprint(tiny_dir: Path) -> int:
    engine = load_engine(LocalModelSpec(name="probe", engine="transformers", source=str(tiny_dir), device="cpu"))
    try:
        size = engine.footprint_bytes
    finally:
        engine.close()
    assert size > 0
    return size


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _models(tiny_dir: Path, names: str, **kwargs: object) -> list[ManagedModel]:
    out = []
    for name in names:
        spec = LocalModelSpec(name=name, engine="transformers", source=str(tiny_dir), device="cpu")
        out.append(ManagedModel(spec=spec, **kwargs.get(name, {})))  # type: ignore[arg-type]
    return out


@pytest.fixture
def clock() -> Iterator[Clock]:
    yield Clock()


def _run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_least_recently_used_idle_model_is_evicted_to_fit(tiny_dir: Path, footprint: int, clock: Clock) -> None:
    async def body() -> None:
        mgr = ModelManager(_models(tiny_dir, "abc"), int(footprint * 2.5), clock=clock)
        try:
            await mgr.load("a")
            clock.now += 1
            await mgr.load("b")
            clock.now += 1
            async with mgr.lease("a"):  # a is now the most recently used
                pass
            clock.now += 1
            async with mgr.lease("c") as engine:
                assert engine.footprint_bytes == footprint
            assert sorted(mgr.loaded()) == ["a", "c"]
            assert mgr.evictions == 1
            status = mgr.status()
            assert status["memory_used_bytes"] == 2 * footprint <= status["memory_budget_bytes"]
            row = {m["id"]: m for m in status["models"]}
            assert row["b"]["state"] == "unloaded" and row["b"]["memory_bytes"] == 0
            assert row["c"]["memory_bytes"] == footprint and row["c"]["loads"] == 1
        finally:
            await mgr.aclose()

    _run(body())


def test_a_serving_model_is_never_evicted_and_a_model_that_cannot_fit_gets_503(
    tiny_dir: Path, footprint: int, clock: Clock
) -> None:
    async def body() -> None:
        mgr = ModelManager(_models(tiny_dir, "abc"), int(footprint * 2.5), clock=clock)
        try:
            async with mgr.lease("a"), mgr.lease("b"):
                clock.now += 10  # both idle for long in LRU terms, but both are serving
                with pytest.raises(ServiceUnavailableError) as err:
                    async with mgr.lease("c"):
                        pass
                assert err.value.status_code == 503 and err.value.code == "insufficient_memory"
                assert "serving or pinned" in err.value.message
                assert sorted(mgr.loaded()) == ["a", "b"]
            async with mgr.lease("c"):  # once idle, the least recently used one makes room
                pass
            assert sorted(mgr.loaded()) in (["a", "c"], ["b", "c"])
        finally:
            await mgr.aclose()

    _run(body())


def test_pinned_models_stay_and_count_caps_apply(tiny_dir: Path, footprint: int, clock: Clock) -> None:
    async def body() -> None:
        models = _models(tiny_dir, "abc", a={"pinned": True})
        mgr = ModelManager(models, footprint * 10, max_loaded=2, clock=clock)
        try:
            await mgr.load("a")
            clock.now += 1
            await mgr.load("b")
            clock.now += 1
            await mgr.load("c")  # the cap is 2: b goes (a is pinned, though older)
            assert sorted(mgr.loaded()) == ["a", "c"]
            clock.now += 10_000
            assert await mgr.expire() == ["c"]  # keep-alive passed: c unloads, pinned a stays
            assert mgr.loaded() == ["a"]
        finally:
            await mgr.aclose()

    _run(body())


def test_keep_alive_expiry_and_a_request_extending_it(tiny_dir: Path, footprint: int, clock: Clock) -> None:
    async def body() -> None:
        models = _models(tiny_dir, "ab", a={"keep_alive": 300.0}, b={"keep_alive": 300.0})
        mgr = ModelManager(models, footprint * 10, clock=clock)
        try:
            async with mgr.lease("a"):
                pass
            async with mgr.lease("b", keep_alive=3600.0):  # the request's keep_alive replaces the model's
                pass
            clock.now += 299
            assert await mgr.expire() == []
            assert {m["id"]: m["expires_in_seconds"] for m in mgr.status()["models"]}["a"] == pytest.approx(1.0)
            clock.now += 2
            assert await mgr.expire() == ["a"]
            assert mgr.loaded() == ["b"]
            async with mgr.lease("b", keep_alive=None):  # -1 in the request: for ever
                pass
            clock.now += 10**7
            assert await mgr.expire() == []
            async with mgr.lease("b", keep_alive=0.0):  # 0: unload as soon as it is idle
                pass
            for _ in range(100):
                if not mgr.loaded():
                    break
                await asyncio.sleep(0.01)
            assert mgr.loaded() == []
        finally:
            await mgr.aclose()

    _run(body())


def test_budget_smaller_than_the_model_and_unknown_names(tiny_dir: Path, footprint: int) -> None:
    async def body() -> None:
        mgr = ModelManager(_models(tiny_dir, "a"), 1024)
        try:
            with pytest.raises(ServiceUnavailableError) as err:
                await mgr.load("a")
            assert err.value.code == "insufficient_memory" and "memory budget" in err.value.message
            assert mgr.status()["memory_used_bytes"] == 0
            with pytest.raises(NotFoundError):
                await mgr.load("nope")
        finally:
            await mgr.aclose()

    _run(body())


def test_unload_refuses_a_serving_model_and_frees_an_idle_one(tiny_dir: Path, footprint: int) -> None:
    async def body() -> None:
        mgr = ModelManager(_models(tiny_dir, "a"), footprint * 4)
        try:
            async with mgr.lease("a"):
                with pytest.raises(ServiceUnavailableError) as err:
                    await mgr.unload("a")
                assert err.value.code == "model_busy"
            assert await mgr.unload("a") is True
            assert await mgr.unload("a") is False
            assert mgr.status()["memory_used_bytes"] == 0
        finally:
            await mgr.aclose()

    _run(body())


def test_a_missing_engine_file_is_a_clear_503(tmp_path: Path) -> None:
    async def body() -> None:
        spec = LocalModelSpec(name="x", engine="llamacpp", source=str(tmp_path / "missing.gguf"))
        mgr = ModelManager([ManagedModel(spec=spec)], 10**9)
        try:
            with pytest.raises(ServiceUnavailableError) as err:
                await mgr.load("x")
            assert err.value.code == "model_load_failed" and "'x' could not be loaded" in err.value.message
            assert mgr.status()["models"][0]["state"] == "unloaded"
        finally:
            await mgr.aclose()

    _run(body())


def test_a_low_estimate_is_corrected_by_the_measured_footprint(tiny_dir: Path, footprint: int, clock: Clock) -> None:
    """Hub models (and GGUF files, whose KV cache is not on disk) are estimated low: once loaded,
    the measured size decides, and what no longer fits is evicted, or the new model goes again."""

    async def body() -> None:
        mgr = ModelManager(_models(tiny_dir, "ab"), int(footprint * 1.5), clock=clock, estimate=lambda spec: 0)
        try:
            await mgr.load("a")
            clock.now += 1
            await mgr.load("b")  # estimated at 0: fits; measured: a must go
            assert mgr.loaded() == ["b"] and mgr.status()["memory_used_bytes"] == footprint
            async with mgr.lease("b"):
                with pytest.raises(ServiceUnavailableError) as err:
                    await mgr.load("a")  # b is serving: a loaded, measured, and unloaded again
                assert err.value.code == "insufficient_memory"
            assert mgr.loaded() == ["b"] and mgr.status()["memory_used_bytes"] == footprint
        finally:
            await mgr.aclose()

    _run(body())
