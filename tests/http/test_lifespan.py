"""What the server's start-up changes in its process, and that shut-down puts it back."""

from __future__ import annotations

import gc
from pathlib import Path

import httpx

from tests.harness import run_server


def test_shut_down_hands_what_start_up_froze_back_to_the_collector(tmp_path: Path) -> None:
    # Start-up freezes what it built (out of every later GC pass) and raises the young
    # threshold. Frozen objects are never collected, not even at interpreter exit, so a
    # process that serves in-process (tests, embedders) would otherwise never free them:
    # torch's triton, for one, then prints nanobind leak reports at exit.
    before = gc.get_threshold()
    with run_server(tmp_path) as server, httpx.Client(base_url=server.url) as http:
        assert http.get("/health").status_code == 200
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold()[0] == 10_000
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before
