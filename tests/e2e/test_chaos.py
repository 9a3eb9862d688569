"""The chaos soak, short: a real ``switchyard serve`` in front of an upstream that refuses, hangs,
cuts, stalls, delays, fails and echoes the credential it was sent, on SQLite and on PostgreSQL.
The engine and its checks are ``tests/e2e/chaos.py`` (``bench/chaos.py`` runs it for minutes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import PG_ADMIN_URL
from tests.e2e.chaos import ChaosConfig, run_chaos
from tests.fakes.chaotic_upstream import FAULTS


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_chaos_soak(backend: str, tmp_path: Path) -> None:
    # seed 374: the first 10 requests of each of the 8 clients (the least a slow machine sends) ask
    # for every fault at least twice and hang up in each of the three ways at least three times
    report = run_chaos(ChaosConfig(duration=12, warmup=4, concurrency=8, seed=374, fault_rate=0.5, leave_rate=0.15,
                                   postgres=PG_ADMIN_URL if backend == "postgresql" else None, workdir=tmp_path))
    summary = report.summary() + "\n--- server log (tail)\n" + report.log_tail
    assert report.ok, summary
    # the run was as chaotic as it claims: every fault happened, and every kind of ending
    assert set(report.faults) == set(FAULTS), summary  # no request came with a wrong credential
    assert all(report.verdicts[v] for v in ("ok", "http-error", "stream-error", "left")), summary
    assert report.redacted, summary  # echoed credentials reached clients, redacted: the scan had something to find
    assert report.leaves["wait"] and report.leaves["mid-stream"] and report.leaves["any"] and report.rows_499, summary
    # the upstream saw the gateway hang up on every answer that never came or never ended
    assert report.upstream_disconnects >= report.faults["hang"] + report.faults["stall"], summary
