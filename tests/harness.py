"""A real Switchyard server for tests: uvicorn on a free loopback port, in a background thread.

Tests talk to it over HTTP (with the official openai SDK where a client is involved). Nothing
of ours is mocked; upstreams are the fake servers in tests/fakes.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from switchyard.app import create_app
from switchyard.runtime import open_runtime
from switchyard.settings import Settings

__all__ = ["RunningServer", "free_port", "make_key", "run_server"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_key(settings: Settings, name: str = "test", **kwargs: Any) -> str:
    """Create a key on the store directly, as `switchyard keys create` does."""

    async def body() -> str:
        rt = await open_runtime(settings)
        try:
            return (await rt.keys.create(name, **kwargs)).secret
        finally:
            await rt.aclose()

    return asyncio.run(body())


class RunningServer:
    def __init__(self, settings: Settings, admin_key: str) -> None:
        self.settings = settings
        self.admin_key = admin_key
        self.url = f"http://127.0.0.1:{settings.port}"
        self.app = create_app(settings)
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=settings.port, log_config=None, access_log=False,
            lifespan="on", loop="asyncio", timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("switchyard test server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=15)

    @property
    def v1(self) -> str:
        return self.url + "/v1"

    def http(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def usage_rows(self, wait_for: int = 1, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Rows in the usage table once at least ``wait_for`` have been flushed."""
        import sqlalchemy as sa
        from sqlalchemy.ext.asyncio import create_async_engine

        async def read() -> list[dict[str, Any]]:
            engine = create_async_engine(self.settings.resolved_database_url)
            try:
                async with engine.connect() as conn:
                    result = await conn.execute(sa.text("SELECT * FROM usage_records ORDER BY id"))
                    return [dict(r._mapping) for r in result]
            finally:
                await engine.dispose()

        deadline = time.monotonic() + timeout
        while True:
            rows = asyncio.run(read())
            if len(rows) >= wait_for or time.monotonic() > deadline:
                return rows
            time.sleep(0.1)


    @contextmanager
    def holding_stream(self, model: str) -> Iterator[None]:
        """Keep one streaming request to ``model`` open (its first chunks have arrived) for the block."""
        opened, done = threading.Event(), threading.Event()

        def hold() -> None:
            with self.http(self.admin_key) as http, http.stream(
                "POST", "/v1/chat/completions",
                json={"model": model, "messages": [{"role": "user", "content": "hold"}], "stream": True},
            ) as resp:
                for i, _ in enumerate(resp.iter_lines()):
                    if i == 2:
                        opened.set()
                    if done.is_set() or i > 60:
                        break

        holder = threading.Thread(target=hold)
        holder.start()
        try:
            if not opened.wait(5):
                raise AssertionError(f"the stream to {model} did not start")
            yield
        finally:
            done.set()
            holder.join(15)

    def usage_row(self, request_id: str, timeout: float = 5.0) -> dict[str, Any]:
        """The usage row of one request, waiting for the batch writer to flush it."""
        deadline = time.monotonic() + timeout
        while True:
            rows = [r for r in self.usage_rows(wait_for=0) if r["request_id"] == request_id]
            if rows:
                return rows[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"no usage row for request {request_id}")
            time.sleep(0.05)


@contextmanager
def run_server(data_dir: Path, **settings: Any) -> Iterator[RunningServer]:
    base = {"data_dir": data_dir, "port": free_port(), "usage_flush_interval": 0.05, "key_refresh_interval": 0.2,
            "bundled_models": "off"}
    cfg = Settings.model_validate({**base, **settings})
    admin = make_key(cfg, "admin", is_admin=True) if cfg.auth else ""
    server = RunningServer(cfg, admin)
    server.start()
    try:
        yield server
    finally:
        server.stop()
