"""A worker that dies in native code (a local model's segfault or abort) does not take ``switchyard
serve`` down: the client's stream ends, the supervisor logs the signal and the model that was
generating, counts the restart (``/admin/status``, ``/v1/status``, ``switchyard status``,
``/metrics``), starts a fresh worker on the same port (the model loads again on its next
request), backs off when workers keep dying, and ``switchyard stop`` still stops everything.

Real processes: the bundled SmolLM2 GGUF, the official SDK, a real SIGSEGV and SIGABRT sent to
the worker (its pid from ``/admin/status``); the worker's faulthandler runs as for a crash in
llama.cpp."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.cli.support import KEY_RE, ServeProcess, alive, child_pids, port_refuses, run_cli, serve, wait_until
from tests.conftest import UPSTREAM_KEY
from tests.e2e.test_bundled_models import OFFLINE
from tests.fakes import FakeOpenAI

MODEL = "smollm2-135m-instruct"
LONG = "Count from 1 to 300, one number per line, and write nothing else."


def _records(server: ServeProcess, logger: str) -> list[dict[str, Any]]:
    return [r for r in (json.loads(line) for line in server.stderr.splitlines() if line.startswith("{"))
            if r.get("logger") == logger]


def _crashes(server: ServeProcess) -> list[dict[str, Any]]:
    return [r for r in _records(server, "switchyard.supervisor") if r["level"] == "error" and "signal" in r]


def _admin_status(server: ServeProcess, key: str) -> dict[str, Any]:
    with server.http(key, timeout=120) as http:  # (waits in the socket's backlog for a fresh worker)
        reply = http.get("/admin/status")
    assert reply.status_code == 200, reply.text
    status: dict[str, Any] = reply.json()
    return status


def _family(server: ServeProcess) -> set[int]:
    """The supervisor's processes: its workers and whatever they started."""
    found, frontier = set(), [server.pid]
    while frontier:
        kids = child_pids(frontier.pop())
        found |= kids
        frontier += kids
    return found


class _Stream(threading.Thread):
    """A chat stream on the local model through the official SDK, read until it ends."""

    def __init__(self, url: str, key: str) -> None:
        super().__init__(daemon=True)
        self.client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=120)
        self.pieces: list[str] = []
        self.finish: str | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            stream = self.client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": LONG}], max_tokens=1500, temperature=0, stream=True)
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    self.pieces.append(chunk.choices[0].delta.content)
                if chunk.choices and chunk.choices[0].finish_reason:
                    self.finish = chunk.choices[0].finish_reason
        except BaseException as exc:  # reported by the test
            self.error = exc


def _crash_mid_stream(server: ServeProcess, key: str, admin: str, sig: signal.Signals) -> tuple[int, _Stream]:
    """Start a stream on the local model, then kill the worker generating it with ``sig``."""
    worker = _admin_status(server, admin)["worker_pid"]
    stream = _Stream(server.url, key)
    stream.start()
    wait_until(lambda: len(stream.pieces) >= 3 or stream.error or stream.finish, 120, what="the first tokens")
    assert stream.error is None and stream.finish is None, (stream.error, stream.finish)
    os.kill(worker, sig)
    stream.join(30)
    assert not stream.is_alive(), "the client's stream hangs after its worker died"
    assert stream.finish is None, "the stream finished although its worker was killed"
    assert isinstance(stream.error, (httpx.HTTPError, openai.APIError)), repr(stream.error)
    return worker, stream


@pytest.fixture
def bundled(tmp_path: Path) -> Iterator[ServeProcess]:
    with serve(tmp_path, tmp_path / "data", env={**OFFLINE, "HOME": str(tmp_path)}) as server:
        yield server


def test_a_worker_killed_in_a_local_model_is_reported_and_replaced(tmp_path: Path, bundled: ServeProcess) -> None:
    server = bundled
    admin = KEY_RE.findall(server.stdout)[0]  # the first admin key, stored in the database
    with server.http(admin) as http:
        made = http.post("/admin/keys", json={"name": "user"})
        assert made.status_code == 201, made.text
    key = made.json()["key"]
    first = _admin_status(server, admin)
    # one worker, forked: the supervisor has no other child (no multiprocessing resource tracker)
    assert first["pid"] == server.pid and child_pids(server.pid) == {first["worker_pid"]}
    assert (first["restarts"], first["last_crash"]) == (0, None)
    workers = {first["worker_pid"]}

    for number, sig in enumerate((signal.SIGSEGV, signal.SIGABRT), start=1):
        worker, _ = _crash_mid_stream(server, key, admin, sig)
        [crash] = wait_until(lambda n=number: (found := _crashes(server)) and len(found) == n and found[-1:],
                             30, what=f"the supervisor's report of {sig.name}")
        assert (crash["worker"], crash["signal"], crash["models"], crash["restarts"]) == \
            (worker, sig.name, [MODEL], number), crash
        assert f"worker {worker} died of {sig.name}" in crash["msg"]
        assert f"while local model {MODEL} was busy" in crash["msg"]
        assert "Fatal Python error" in crash["fault"] and "Thread" in crash["fault"], crash

        # the next request on the same port is served by a fresh worker, which loads the model again
        with openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=120) as client:
            answer = client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "What is the capital of France?"}], max_tokens=20)
        assert answer.choices[0].message.content, answer
        status = _admin_status(server, admin)
        assert status["pid"] == server.pid and status["worker_pid"] not in workers | {worker}
        assert child_pids(server.pid) == {status["worker_pid"]}  # the dead one reaped, its replacement forked
        workers.add(status["worker_pid"])
        assert status["restarts"] == number
        last = status["last_crash"]
        assert (last["worker_pid"], last["signal"], last["models"]) == (worker, sig.name, [MODEL]), last
        assert "fault" not in last  # the stacks go to the log only
        with server.http(key) as http:
            models = http.get("/v1/status").json()
        assert models["restarts"] == number and models["last_crash"]["signal"] == sig.name
        assert [m["loads"] for m in models["models"] if m["id"] == MODEL] == [1]  # loaded again, once

    with server.http(admin) as http:
        scrape = http.get("/metrics")
    assert scrape.status_code == 200
    assert "switchyard_worker_restarts_total 2.0" in scrape.text.splitlines(), scrape.text

    shown = run_cli("status", "--url", server.url, "--api-key", admin, cwd=tmp_path)
    assert shown.returncode == 0, shown
    assert f"pid {server.pid} (worker " in shown.stdout
    assert "restarts: 2 (a worker died and was started again); last: worker " in shown.stdout
    assert f"died of SIGABRT (Aborted) while local model {MODEL} was busy" in shown.stdout, shown.stdout

    # the keys and their data survived: the created key is listed, the admin key still administers
    with server.http(admin) as http:
        listed = http.get("/admin/keys")
    assert listed.status_code == 200 and "user" in {k["name"] for k in listed.json()["data"]}

    family = _family(server)
    assert family
    stopped = run_cli("stop", "--data-dir", server.data_dir, cwd=tmp_path)
    assert stopped.returncode == 0, stopped
    assert f"stopped switchyard (pid {server.pid})" in stopped.stdout
    assert server.wait(30) == 0, server.describe()
    wait_until(lambda: not any(alive(p) for p in family | workers), 10, what="every worker to exit")
    assert port_refuses(server.port)
    assert not (server.data_dir / "switchyard.pid").exists()


def test_a_crash_loop_backs_off_a_hung_worker_is_replaced_and_a_killed_supervisor_takes_its_workers_along(
        tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    config = tmp_path / "switchyard.yaml"
    config.write_text(json.dumps({
        "bundled_models": "on",  # local models (never loaded here) are what make `serve` supervise one worker
        "providers": {"fake": {"type": "openai", "base_url": fake_openai.base_url, "api_key": UPSTREAM_KEY}},
        "models": [{"alias": "chat", "provider": "fake", "model": "gpt-4o-mini"}],
    }), encoding="utf-8")
    admin = "crash-loop-admin-key-0123456789"
    with serve(tmp_path, tmp_path / "data", "--api-key", admin, config=config) as server:
        killed = []
        for sig in (signal.SIGSEGV, signal.SIGSEGV, signal.SIGSTOP):  # each as soon as its worker answers
            worker = _admin_status(server, admin)["worker_pid"]
            assert worker not in killed
            os.kill(worker, sig)  # SIGSTOP: a worker that hangs, and stops answering the health check
            killed.append(worker)
            wait_until(lambda n=len(killed): len(_crashes(server)) == n, 30, what="the report")
        crashes = _crashes(server)
        # a worker that dies soon after its start is replaced later and later: it does not spin
        assert [c["restart_in_s"] for c in crashes] == [0, 1, 2], crashes
        assert [c["worker"] for c in crashes] == killed
        assert all(c["models"] == [] and "while local model" not in c["msg"] for c in crashes)
        assert [c["signal"] for c in crashes] == ["SIGSEGV", "SIGSEGV", None]
        assert f"worker {killed[-1]} stopped answering its health check and was killed" in crashes[-1]["msg"]
        assert "starts in 2 s (3 deaths in a row" in crashes[-1]["msg"]
        assert not alive(killed[-1])
        status = _admin_status(server, admin)
        assert status["restarts"] == 3 and status["worker_pid"] not in killed
        with server.http(admin) as http:
            reply = http.post("/v1/chat/completions", json={"model": "chat", "messages": [
                {"role": "user", "content": "hello there"}]})
        assert reply.status_code == 200, reply.text

        # SIGKILL leaves the supervisor no time to stop its worker: the worker stops by itself
        family = _family(server)
        os.kill(server.pid, signal.SIGKILL)
        server.wait(15)
        wait_until(lambda: not any(alive(p) for p in family), 30, what="the orphaned worker to exit")
        assert port_refuses(server.port)
