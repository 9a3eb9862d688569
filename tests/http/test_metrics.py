"""Metrics: scraped from a live server; the documented names and the dashboard's queries match."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.contract.test_chat import HELLO, sse_events
from tests.harness import RunningServer, run_server

ROOT = Path(__file__).resolve().parents[2]


def scrape(server: RunningServer) -> dict[str, set[str]]:
    """Family name (as exposed, counters with _total) -> label names seen."""
    with server.http(server.admin_key) as http:
        text = http.get("/metrics").text
    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        if family.name.endswith("_created"):  # prometheus_client's creation timestamps, not metrics
            continue
        name = family.name + ("_total" if family.type == "counter" else "")
        labels = {k for sample in family.samples for k in sample.labels if k not in ("le", "quantile")}
        out.setdefault(name, set()).update(labels)
    return out


# exported once a llama.cpp model is loaded (tests/local/test_llamacpp_batching.py scrapes them)
LOCAL_ENGINE_FAMILIES = {"switchyard_local_prompt_tokens_total", "switchyard_local_completion_tokens_total",
                         "switchyard_local_time_to_first_token_seconds", "switchyard_local_slots",
                         "switchyard_local_slots_busy", "switchyard_local_batch_occupancy",
                         "switchyard_local_tokens_per_second", "switchyard_local_prefix_cache_hit_ratio"}


# exported by the workers of `switchyard serve`, from their supervisor's record (tests/cli/test_serve_crash.py)
SERVE_ONLY = {"switchyard_worker_restarts_total"}


def documented() -> dict[str, set[str]]:
    rows = re.findall(r"^\| `(switchyard_[a-z_]+)` \| \w+ \| ([^|]*) \|", (ROOT / "docs/metrics.md").read_text(), re.M)
    return {name: {x.strip() for x in labels.split(",") if x.strip() not in ("", "—")} for name, labels in rows}


def test_every_documented_metric_is_exported_with_its_labels(tmp_path: Path, fake_openai: object) -> None:
    base = getattr(fake_openai, "base_url")
    with run_server(tmp_path, providers={"f": {"type": "openai", "base_url": base, "api_key": "x"}},
                    models=[{"alias": "m", "provider": "f", "model": "gpt-4o-mini", "max_concurrent": 1,
                             "input_cost_per_1m": 2.5, "output_cost_per_1m": 10},
                            {"alias": "bad", "provider": "f", "model": "error-500"}]) as server:
        with server.http(server.admin_key) as http:
            # the fake upstream wants UPSTREAM_KEY, so this is an upstream error (502)
            assert http.post("/v1/chat/completions", json={"model": "m", "messages": HELLO}).status_code == 502
        exported = scrape(server)
    docs = documented()
    assert len(docs) >= 10
    missing = {n for n in docs if n not in exported}
    # some families only appear once they have a sample; the rest must be there already
    assert missing <= {"switchyard_time_to_first_token_seconds", "switchyard_limiter_rejections_total",
                       "switchyard_cost_usd_total", "switchyard_gateway_overhead_seconds",
                       "switchyard_queue_depth", "switchyard_loaded_model_bytes",
                       "switchyard_loaded_model_vram_bytes", "switchyard_upstream_cooldowns_total",
                       "switchyard_upstream_cooling_down", "switchyard_upstream_panic",
                       "switchyard_upstream_panic_requests_total"} | LOCAL_ENGINE_FAMILIES | SERVE_ONLY, missing
    undocumented = {n for n in exported if n.startswith("switchyard_") and n not in docs}
    assert not undocumented, undocumented
    compared = 0
    for name, labels in docs.items():
        if exported.get(name):  # a family with samples shows its label names
            assert exported[name] == labels, (name, exported[name], labels)
            compared += 1
    assert compared >= 5


def test_metrics_move_with_traffic_and_the_overhead_header(gateway: RunningServer) -> None:
    with gateway.http(gateway.admin_key) as http:
        resp = http.post("/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": HELLO})
    overhead_ms = float(resp.headers["x-switchyard-overhead-ms"])
    assert 0 <= overhead_ms < resp.elapsed.total_seconds() * 1000
    sse_events(gateway, {"model": "gpt-4o-mini", "messages": HELLO, "stream": True})
    exported = scrape(gateway)
    for name in ("switchyard_time_to_first_token_seconds", "switchyard_gateway_overhead_seconds",
                 "switchyard_upstream_duration_seconds", "switchyard_upstream_errors_total"):
        assert name in exported, name


def test_cost_and_rejections_are_counted(tmp_path: Path, fake_openai: object) -> None:
    base = getattr(fake_openai, "base_url")
    from tests.conftest import UPSTREAM_KEY

    with run_server(tmp_path, providers={"f": {"type": "openai", "base_url": base, "api_key": UPSTREAM_KEY}},
                    models=[{"alias": "m", "provider": "f", "model": "gpt-4o-mini",
                             "input_cost_per_1m": 1_000_000, "output_cost_per_1m": 2_000_000},
                            {"alias": "one", "provider": "f", "model": "slow-stream", "max_concurrent": 1,
                             "max_queue": 0}]) as server:
        with server.http(server.admin_key) as http:
            usage = http.post("/v1/chat/completions", json={"model": "m", "messages": HELLO}).json()["usage"]
            with server.holding_stream("one"):
                assert http.post("/v1/chat/completions", json={"model": "one", "messages": HELLO}).status_code == 429
            text = http.get("/metrics").text
    expected = usage["prompt_tokens"] * 1 + usage["completion_tokens"] * 2
    assert f'switchyard_cost_usd_total{{model="m",provider="f"}} {float(expected)}' in text
    assert 'switchyard_limiter_rejections_total{model="one",reason="queue_full"} 1.0' in text


def test_dashboard_queries_use_only_exported_metrics() -> None:
    dashboard = json.loads((ROOT / "deploy/grafana/switchyard.json").read_text())
    docs = documented()
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 10
    shown = set()
    for expr in exprs:
        for name in re.findall(r"switchyard_[a-z_]+", expr):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            assert base in docs, (name, expr)
            shown.add(base)
    assert shown == set(docs), f"documented but on no panel: {set(docs) - shown}"
