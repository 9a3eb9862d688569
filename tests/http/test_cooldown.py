"""An upstream that keeps failing cools down (fast 503s), then one probe brings it back."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from switchyard.errors import ServiceUnavailableError
from switchyard.service.cooldown import CooldownPolicy, Cooldowns
from tests.contract.test_chat import HELLO
from tests.fakes import FakeOpenAI
from tests.harness import run_server


def test_an_upstream_that_goes_down_cools_down_and_a_probe_brings_it_back(tmp_path: Path) -> None:
    upstream = FakeOpenAI().start()
    try:
        with run_server(tmp_path, providers={"up": {
                "type": "openai", "base_url": upstream.base_url,
                "cooldown_failures": 2, "cooldown_window": 10, "cooldown_seconds": 0.5}},
                models=[{"alias": "m", "provider": "up", "model": "gpt-4o-mini"}]) as server, \
                server.http(server.admin_key) as http:
            chat = {"model": "m", "messages": HELLO}
            assert http.post("/v1/chat/completions", json=chat).status_code == 200
            upstream.stop()  # the upstream goes away
            assert [http.post("/v1/chat/completions", json=chat).status_code for _ in range(2)] == [502, 502]
            cooling = http.post("/v1/chat/completions", json=chat)
            assert cooling.status_code == 503 and cooling.json()["error"]["code"] == "upstream_cooldown"
            assert cooling.headers["retry-after"] == "1"
            status = {u["name"]: u for u in http.get("/admin/upstreams").json()["data"]}
            assert 0 < status["up"]["cooldown_s"] <= 0.5
            metrics = http.get("/metrics").text
            assert 'switchyard_upstream_cooling_down{provider="up"} 1.0' in metrics
            assert 'switchyard_upstream_cooldowns_total{provider="up"} 1.0' in metrics

            upstream.start()  # back, on the same port
            seen = len(upstream.requests)
            assert http.post("/v1/chat/completions", json=chat).status_code == 503  # still cooling
            assert len(upstream.requests) == seen  # fast: the upstream was not asked
            time.sleep(0.6)
            assert http.post("/v1/chat/completions", json=chat).status_code == 200  # the probe
            assert [http.post("/v1/chat/completions", json=chat).status_code for _ in range(3)] == [200] * 3
            assert 'switchyard_upstream_cooling_down{provider="up"} 0.0' in http.get("/metrics").text
    finally:
        upstream.stop()


def test_client_errors_and_upstream_429s_do_not_cool_an_upstream_down(tmp_path: Path) -> None:
    with FakeOpenAI() as upstream, run_server(tmp_path, providers={"up": {
            "type": "openai", "base_url": upstream.base_url, "cooldown_failures": 1}},
            models=[{"alias": "m", "provider": "up", "model": "gpt-4o-mini"},
                    {"alias": "limited", "provider": "up", "model": "error-429"},
                    {"alias": "picky", "provider": "up", "model": "error-400"}]) as server, \
            server.http(server.admin_key) as http:
        for _ in range(3):
            assert http.post("/v1/chat/completions", json={"model": "limited", "messages": HELLO}).status_code == 429
            assert http.post("/v1/chat/completions", json={"model": "picky", "messages": HELLO}).status_code == 400
        assert http.post("/v1/chat/completions", json={"model": "m", "messages": HELLO}).status_code == 200


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_failures_outside_the_window_do_not_add_up_and_a_failed_probe_cools_again() -> None:
    clock = FakeClock()
    changes: list[tuple[str, bool]] = []
    cd = Cooldowns({"u": CooldownPolicy(failures=3, window=10, cooldown=5)},
                   on_change=lambda u, c: changes.append((u, c)), clock=clock)
    for _ in range(2):
        cd.record("u", ok=False)
    clock.now += 11  # those two are now outside the window
    cd.record("u", ok=False)
    assert cd.admit("u") is False and changes == []
    cd.record("u", ok=False)
    cd.record("u", ok=False)  # three within the window
    assert changes == [("u", True)]
    with pytest.raises(ServiceUnavailableError):
        cd.admit("u")
    clock.now += 5
    assert cd.admit("u") is True  # the one probe
    with pytest.raises(ServiceUnavailableError):
        cd.admit("u")  # nobody else while it is out
    cd.record("u", ok=False, probe=True)
    assert changes[-1] == ("u", True) and cd.remaining("u") == 5
    clock.now += 5
    assert cd.admit("u") is True
    cd.record("u", ok=True, probe=True)
    assert changes[-1] == ("u", False) and cd.admit("u") is False
