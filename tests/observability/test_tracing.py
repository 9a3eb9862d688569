"""Optional OpenTelemetry traces: spans reach a (fake) OTLP/HTTP collector, carry what an operator
needs and nothing secret; without the setting, OpenTelemetry is not even imported."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydantic
import pytest

from switchyard.observability.tracing import traces_url
from switchyard.settings import Settings
from tests.conftest import UPSTREAM_KEY
from tests.fakes import FakeOpenAI
from tests.harness import run_server
from tests.observability.collector import FakeCollector, ReceivedSpan

PROMPT = "the tracing probe prompt 7c1e"
QUERY_SECRET = "querysecret9f2b"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
CHAT = "/v1/chat/completions"


@dataclass
class Traced:
    spans: dict[str, ReceivedSpan]  # by request id
    all_spans: list[ReceivedSpan]
    statuses: dict[str, int]
    collector: FakeCollector
    admin_key: str


def _body(model: str, **extra: object) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": PROMPT}], **extra}


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory, fake_openai: FakeOpenAI) -> Iterator[Traced]:
    config = {
        "providers": {"fake": {"type": "openai", "base_url": fake_openai.base_url, "api_key": UPSTREAM_KEY}},
        "models": [{"alias": m, "provider": "fake"} for m in ("gpt-4o-mini", "error-500", "slow-stream")],
    }
    statuses: dict[str, int] = {}
    with FakeCollector() as collector:
        with run_server(tmp_path_factory.mktemp("traced"), otel_endpoint=collector.endpoint,
                        otel_service_name="switchyard-test", **config) as server:
            with server.http(server.admin_key) as http:
                r = http.post(CHAT, json=_body("gpt-4o-mini"), headers={"x-request-id": "rq-chat"})
                statuses["rq-chat"] = r.status_code
                with http.stream("POST", CHAT, json=_body("gpt-4o-mini", stream=True),
                                 headers={"x-request-id": "rq-stream"}) as r:
                    r.read()
                    statuses["rq-stream"] = r.status_code
                r = http.post(CHAT, json=_body("error-500"), headers={
                    "x-request-id": "rq-error", "traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01",
                })
                statuses["rq-error"] = r.status_code
                with http.stream("POST", CHAT, json=_body("slow-stream", stream=True),
                                 headers={"x-request-id": "rq-left"}) as r:
                    statuses["rq-left"] = r.status_code
                    next(r.iter_raw())  # the first chunk, then hang up
                r = http.get(f"/v1/models?probe={QUERY_SECRET}", headers={"x-request-id": "rq-models"})
                statuses["rq-models"] = r.status_code
                r = http.get("/no/such/path", headers={"x-request-id": "rq-404"})
                statuses["rq-404"] = r.status_code
            admin_key = server.admin_key
        # the server has stopped: its shutdown sent the queued spans (the batch delay is 5 s)
        spans = list(collector.spans)
    by_id = {s.attributes["switchyard.request_id"]: s for s in spans if "switchyard.request_id" in s.attributes}
    yield Traced(by_id, spans, statuses, collector, admin_key)


def test_each_request_is_one_server_span_named_by_its_route(traced: Traced) -> None:
    assert sorted(traced.spans) == sorted(traced.statuses)
    assert len(traced.all_spans) == len(traced.statuses)
    names = {rid: span.name for rid, span in traced.spans.items()}
    assert names == {
        "rq-chat": f"POST {CHAT}", "rq-stream": f"POST {CHAT}", "rq-error": f"POST {CHAT}",
        "rq-left": f"POST {CHAT}", "rq-models": "GET /v1/models", "rq-404": "GET",
    }
    for span in traced.all_spans:
        assert span.kind == "SERVER"
        assert span.resource["service.name"] == "switchyard-test"
    assert set(traced.collector.paths) == {"/v1/traces"}


def test_spans_carry_method_path_status_and_upstream_time(traced: Traced) -> None:
    for rid, span in traced.spans.items():
        attrs = span.attributes
        assert attrs["http.response.status_code"] == traced.statuses[rid]
        assert attrs["http.request.method"] in ("GET", "POST")
        assert attrs["url.path"] in (CHAT, "/v1/models", "/no/such/path")
    chat = traced.spans["rq-chat"].attributes
    assert chat["http.route"] == CHAT and chat["url.scheme"] == "http"
    assert isinstance(chat["switchyard.key_id"], str)
    assert 0 < chat["switchyard.upstream_ms"] < traced.spans["rq-chat"].duration_s * 1000
    assert traced.spans["rq-stream"].attributes["switchyard.upstream_ms"] > 0
    assert chat["gen_ai.request.model"] == traced.spans["rq-stream"].attributes["gen_ai.request.model"]
    assert "switchyard.upstream_ms" not in traced.spans["rq-models"].attributes
    assert traced.spans["rq-chat"].status == traced.spans["rq-stream"].status == "UNSET"
    assert traced.spans["rq-404"].status == "UNSET" and "http.route" not in traced.spans["rq-404"].attributes


def test_an_upstream_failure_marks_the_span_as_an_error(traced: Traced) -> None:
    span = traced.spans["rq-error"]
    assert traced.statuses["rq-error"] >= 500
    assert span.status == "ERROR"
    assert span.attributes["error.type"] == str(traced.statuses["rq-error"])


def test_an_incoming_traceparent_is_continued(traced: Traced) -> None:
    span = traced.spans["rq-error"]
    assert span.trace_id == TRACE_ID and span.parent_span_id == PARENT_ID
    others = [s for rid, s in traced.spans.items() if rid != "rq-error"]
    assert all(s.trace_id != TRACE_ID and s.parent_span_id == "" for s in others)


def test_a_client_leaving_a_stream_is_recorded(traced: Traced) -> None:
    span = traced.spans["rq-left"]
    assert span.attributes["http.response.status_code"] == 200
    assert span.attributes.get("switchyard.client_disconnected") is True
    assert "switchyard.client_disconnected" not in traced.spans["rq-stream"].attributes


def test_spans_hold_no_keys_prompts_headers_or_query_strings(traced: Traced) -> None:
    assert traced.collector.bodies
    for body in traced.collector.bodies:
        for secret in (traced.admin_key, UPSTREAM_KEY, PROMPT, QUERY_SECRET, "Bearer", "echo:"):
            assert secret.encode() not in body, secret


def test_traces_url_adds_the_signal_path_once() -> None:
    assert traces_url("http://127.0.0.1:4318") == "http://127.0.0.1:4318/v1/traces"
    assert traces_url("https://otel.example/") == "https://otel.example/v1/traces"
    assert traces_url("http://c:4318/v1/traces") == "http://c:4318/v1/traces"


def test_the_endpoint_must_be_an_http_url(tmp_path: Path) -> None:
    with pytest.raises(pydantic.ValidationError, match="otel_endpoint"):
        Settings(data_dir=tmp_path, otel_endpoint="127.0.0.1:4318")


def _python(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SWITCHYARD_", "OTEL_"))}
    return subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)


def test_without_the_setting_opentelemetry_is_never_imported(tmp_path: Path) -> None:
    probe = """
import importlib, pkgutil, sys
import switchyard
for m in pkgutil.walk_packages(switchyard.__path__, "switchyard."):
    if ".migrations" not in m.name and not m.name.endswith("__main__"):
        importlib.import_module(m.name)
from switchyard.app import create_app
from switchyard.settings import Settings
app = create_app(Settings(data_dir=sys.argv[1]))
print([m.cls.__name__ for m in app.user_middleware])
print(sorted(n for n in sys.modules if n.split(".")[0] == "opentelemetry"))
"""
    result = _python(probe, tmp_path)
    assert result.returncode == 0, result.stderr
    middleware, otel_modules = result.stdout.strip().splitlines()
    assert middleware == "['EdgeMiddleware', 'DisconnectWatch']"  # no tracing middleware
    assert otel_modules == "[]"


def test_the_setting_without_the_extra_is_a_clear_config_error(tmp_path: Path) -> None:
    probe = """
import sys
sys.modules["opentelemetry"] = None  # as if 'switchyard[otel]' were not installed
from switchyard.app import create_app
from switchyard.settings import ConfigError, Settings
try:
    create_app(Settings(data_dir=sys.argv[1], otel_endpoint="http://127.0.0.1:4318"))
except ConfigError as exc:
    print(exc)
else:
    print("no error")
"""
    result = _python(probe, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "pip install 'switchyard[otel]'" in result.stdout
    assert "otel_endpoint" in result.stdout and "not installed" in result.stdout

