"""OllamaProvider's model management (load, unload, pull) against the fake Ollama's native API."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import httpx
import pytest

from switchyard.core.models import UpstreamSpec
from switchyard.core.ports import ManagesModels, ReportsRunningModels
from switchyard.errors import (
    BadRequestError,
    ModelNotFoundError,
    NotFoundError,
    UpstreamConnectionError,
    UpstreamError,
)
from switchyard.providers.ollama.client import OllamaProvider
from tests.fakes import FakeOllama
from tests.harness import free_port

T = TypeVar("T")


@pytest.fixture(scope="module")
def up() -> Iterator[FakeOllama]:
    with FakeOllama(models=["llama3.2:1b"], library=["qwen2.5:0.5b", "llama3.2:1b", "all-minilm"]) as fake:
        yield fake


def with_provider(url: str, body: Callable[[OllamaProvider], Awaitable[T]]) -> T:
    async def run() -> T:
        provider = OllamaProvider(UpstreamSpec(name="ollama", type="ollama", base_url=url, timeout=10))
        try:
            return await body(provider)
        finally:
            await provider.aclose()

    return asyncio.run(run())


def ps(up: FakeOllama) -> dict[str, dict[str, Any]]:
    models = httpx.get(up.base_url + "/api/ps", timeout=5).json()["models"]
    return {m["name"]: m for m in models}


def collect(provider: OllamaProvider, model: str) -> Awaitable[list[dict[str, object]]]:
    async def run() -> list[dict[str, object]]:
        return [p async for p in provider.pull(model)]

    return run()


def test_the_provider_satisfies_the_ports(up: FakeOllama) -> None:
    provider = OllamaProvider(UpstreamSpec(name="ollama", type="ollama", base_url=up.base_url))
    assert isinstance(provider, ManagesModels) and isinstance(provider, ReportsRunningModels)


def test_load_puts_the_model_in_ps_for_its_keep_alive(up: FakeOllama) -> None:
    up.reset()

    async def body(p: OllamaProvider) -> Any:
        await p.load_model("llama3.2:1b", keep_alive="10m")
        return await p.running_models()

    running = with_provider(up.base_url, body)
    sent = [r.body for r in up.requests if r.path == "/api/generate"]
    assert sent == [{"model": "llama3.2:1b", "keep_alive": "10m"}]  # no prompt: Ollama's "load a model"
    assert [m["name"] for m in running] == ["llama3.2:1b"]
    left = up.loaded["llama3.2:1b"] - time.time()
    assert 590 < left <= 600
    assert ps(up)["llama3.2:1b"]["expires_at"][:19] == str(running[0]["expires_at"])[:19]


def test_keep_alive_in_seconds_and_for_ever(up: FakeOllama) -> None:
    with_provider(up.base_url, lambda p: p.load_model("llama3.2:1b", keep_alive=30))
    assert 25 < up.loaded["llama3.2:1b"] - time.time() <= 30
    with_provider(up.base_url, lambda p: p.load_model("llama3.2:1b", keep_alive=-1))
    assert up.loaded["llama3.2:1b"] - time.time() > 365 * 86400
    up.reset()
    with_provider(up.base_url, lambda p: p.load_model("llama3.2:1b"))  # the upstream's default (5m)
    assert up.last_request.body == {"model": "llama3.2:1b"}
    assert 290 < up.loaded["llama3.2:1b"] - time.time() <= 300


def test_unload_removes_it(up: FakeOllama) -> None:
    with_provider(up.base_url, lambda p: p.load_model("llama3.2:1b", keep_alive="1h"))
    assert "llama3.2:1b" in ps(up)
    up.reset()
    with_provider(up.base_url, lambda p: p.unload_model("llama3.2:1b"))
    assert up.last_request.body == {"model": "llama3.2:1b", "keep_alive": 0}
    assert "llama3.2:1b" not in ps(up)


def test_loading_a_model_ollama_does_not_have_is_not_found(up: FakeOllama) -> None:
    with pytest.raises(NotFoundError) as caught:
        with_provider(up.base_url, lambda p: p.load_model("not-pulled:7b"))
    assert caught.value.code == "upstream_not_found" and "try pulling it first" in caught.value.message
    assert "not-pulled:7b" not in ps(up)


def test_upstream_failures_map_like_the_other_calls(up: FakeOllama) -> None:
    with pytest.raises(UpstreamError) as caught:
        with_provider(up.base_url, lambda p: p.load_model("error-500"))
    assert caught.value.status_code == 502 and "llama runner process has terminated" in caught.value.message
    with pytest.raises(BadRequestError):
        with_provider(up.base_url, lambda p: p.unload_model("error-400"))
    with pytest.raises(UpstreamConnectionError):
        with_provider(f"http://127.0.0.1:{free_port()}", lambda p: p.load_model("llama3.2:1b"))


def test_pull_streams_progress_then_tags_list_the_model(up: FakeOllama) -> None:
    up.reset()
    tags = httpx.get(up.base_url + "/api/tags", timeout=5).json()["models"]
    assert "qwen2.5:0.5b" not in [m["name"] for m in tags]

    progress = with_provider(up.base_url, lambda p: collect(p, "qwen2.5:0.5b"))

    assert up.last_request.body == {"model": "qwen2.5:0.5b", "stream": True}
    statuses = [p["status"] for p in progress]
    assert statuses[0] == "pulling manifest"
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    layers: dict[str, list[dict[str, object]]] = {}
    for p in progress:
        if "digest" in p:
            layers.setdefault(str(p["digest"]), []).append(p)
    assert len(layers) == 4
    for digest, lines in layers.items():
        assert digest.startswith("sha256:") and {p["status"] for p in lines} == {f"pulling {digest[7:19]}"}
        total = lines[0]["total"]
        assert isinstance(total, int) and total > 0 and all(p["total"] == total for p in lines)
        done = [int(str(p.get("completed", 0))) for p in lines]
        assert done == sorted(done) and done[0] == 0 and done[-1] == total
    assert max(len(lines) for lines in layers.values()) > 2  # the big layer reports its way through

    tags = httpx.get(up.base_url + "/api/tags", timeout=5).json()["models"]
    assert "qwen2.5:0.5b" in [m["name"] for m in tags]
    names = with_provider(up.base_url, lambda p: p.list_models())
    assert "qwen2.5:0.5b" in names and "llama3.2:1b" in names
    with_provider(up.base_url, lambda p: p.load_model("qwen2.5:0.5b", keep_alive="1m"))  # pulled: loadable
    assert "qwen2.5:0.5b" in ps(up)


def test_pulling_a_model_the_registry_lacks_is_model_not_found(up: FakeOllama) -> None:
    seen: list[dict[str, object]] = []

    async def body(p: OllamaProvider) -> None:
        async for line in p.pull("no-such-model:1b"):
            seen.append(line)

    with pytest.raises(ModelNotFoundError) as caught:
        with_provider(up.base_url, body)
    assert caught.value.status_code == 404 and caught.value.param == "model"
    assert "no-such-model:1b" in caught.value.message
    assert seen == [{"status": "pulling manifest"}]  # as real Ollama: the manifest stage, then the error line
    tags = httpx.get(up.base_url + "/api/tags", timeout=5).json()["models"]
    assert "no-such-model:1b" not in [m["name"] for m in tags]


def test_pull_rejections_and_failures(up: FakeOllama) -> None:
    with pytest.raises(BadRequestError) as bad:
        with_provider(up.base_url, lambda p: collect(p, "bad name"))
    assert bad.value.message == "invalid model name"
    with pytest.raises(UpstreamConnectionError):
        with_provider(f"http://127.0.0.1:{free_port()}", lambda p: collect(p, "qwen2.5:0.5b"))


def test_a_pull_that_stops_early_is_an_error(up: FakeOllama) -> None:
    """An upstream that drops the connection mid-pull: never reported as a finished pull."""
    seen: list[dict[str, object]] = []

    async def body(p: OllamaProvider) -> None:
        async for line in p.pull("fail-mid-stream"):
            seen.append(line)

    with pytest.raises(UpstreamError):
        with_provider(up.base_url, body)
    assert len(seen) == 3 and seen[-1]["status"] != "success"
    assert "fail-mid-stream:latest" not in up.pulled
