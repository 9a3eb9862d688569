"""/health, /ready and /metrics."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.conftest import UPSTREAM_KEY
from tests.contract.test_chat import HELLO
from tests.fakes import FakeOpenAI
from tests.harness import RunningServer, run_server


def test_health_is_public(gateway: RunningServer) -> None:
    with httpx.Client(base_url=gateway.url) as http:
        resp = http.get("/health")
    assert resp.status_code == 200 and resp.json()["status"] == "healthy"


def test_the_root_points_to_the_api_without_a_key(gateway: RunningServer) -> None:
    with httpx.Client(base_url=gateway.url) as http:
        resp = http.get("/")
        assert http.post("/").status_code == 405
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"
    body = resp.json()
    assert body["name"] == "switchyard" and body["version"] == http_version(gateway)
    assert (body["api"], body["models"], body["health"], body["ready"]) == ("/v1", "/v1/models", "/health", "/ready")
    assert "docs" in body and "ui" not in body  # no console yet: nothing links to one
    assert "sk-" not in resp.text and "key" not in {k.lower() for k in body}


def http_version(gateway: RunningServer) -> str:
    version: str = httpx.get(gateway.url + "/health").json()["version"]
    return version


def test_ready_names_the_failing_upstream(gateway: RunningServer) -> None:
    with httpx.Client(base_url=gateway.url) as http:
        resp = http.get("/ready")
    body = resp.json()
    assert resp.status_code == 503 and body["status"] == "not_ready"
    assert body["checks"]["store"] == "ok"
    assert body["checks"]["upstream:fake"] == "ok" and body["checks"]["upstream:ollama"] == "ok"
    dead = [k for k in body["checks"] if k.startswith("upstream:openai@")]
    assert dead and "connect" in body["checks"][dead[0]].lower()


def test_ready_when_everything_answers(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    with run_server(tmp_path, providers={"fake": {"type": "openai", "base_url": fake_openai.base_url,
                                                  "api_key": UPSTREAM_KEY}},
                    models=[{"alias": "m", "provider": "fake", "model": "gpt-4o-mini"}]) as server, \
            httpx.Client(base_url=server.url) as http:
        resp = http.get("/ready")
    assert resp.status_code == 200 and resp.json() == {"status": "ready", "checks": {"store": "ok",
                                                                                      "upstream:fake": "ok"}}


def test_metrics_need_admin_and_count_requests_tokens_latency(gateway: RunningServer) -> None:
    with gateway.http(gateway.admin_key) as http:
        assert http.post("/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": HELLO}).status_code == 200
        http.post("/v1/chat/completions", json={"model": "error-429", "messages": HELLO})
        text = http.get("/metrics").text
    with httpx.Client(base_url=gateway.url) as anonymous:
        assert anonymous.get("/metrics").status_code == 401
    assert 'switchyard_requests_total{endpoint="chat",model="gpt-4o-mini",provider="fake",status="200"}' in text
    assert 'status="429"' in text
    assert 'switchyard_tokens_total{model="gpt-4o-mini",provider="fake",type="completion"}' in text
    assert 'switchyard_request_duration_seconds_bucket{endpoint="chat",le="0.005",model="error-429",provider="fake",' \
           'status="429"}' in text
    assert "switchyard_requests_in_flight" in text
    assert UPSTREAM_KEY not in text and gateway.admin_key not in text


def test_metrics_can_be_public(tmp_path: Path) -> None:
    with run_server(tmp_path, metrics_public=True) as server, httpx.Client(base_url=server.url) as http:
        assert http.get("/metrics").status_code == 200


def test_cors_is_off_by_default_and_follows_the_allow_list(tmp_path: Path, gateway: RunningServer) -> None:
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    with httpx.Client(base_url=gateway.url) as http:
        assert "access-control-allow-origin" not in http.options("/v1/chat/completions", headers=preflight).headers
    with run_server(tmp_path, cors_allow_origins=["https://app.example"]) as server, \
            httpx.Client(base_url=server.url) as http:
        ok = http.options("/v1/chat/completions", headers=preflight)
        other = http.options("/v1/chat/completions", headers={**preflight, "Origin": "https://evil.example"})
    assert ok.headers["access-control-allow-origin"] == "https://app.example"
    assert "access-control-allow-origin" not in other.headers


def test_admin_status_reports_in_flight_models_upstreams_and_recent_errors(gateway: RunningServer) -> None:
    with gateway.http(gateway.admin_key) as http:
        http.post("/v1/chat/completions", json={"model": "error-500", "messages": HELLO},
                  headers={"x-request-id": "status-err-1"})
        status = http.get("/admin/status").json()
    assert status["object"] == "status" and status["in_flight"] == 0 and status["uptime_s"] >= 0
    assert "gpt-4o-mini" in status["models"] and "disabled" not in status["models"]
    assert {u["name"] for u in status["upstreams"]} >= {"fake", "ollama"}
    newest = status["recent_errors"][0]
    assert (newest["request_id"], newest["status"], newest["model"]) == ("status-err-1", 502, "error-500")
    assert UPSTREAM_KEY not in str(status)
