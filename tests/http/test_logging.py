"""JSON logs carry request ids, and never keys, prompts or upstream credentials."""

from __future__ import annotations

import json
import logging
import time

import pytest

from switchyard.observability.logging import JsonFormatter
from tests.conftest import UPSTREAM_KEY
from tests.harness import RunningServer

PROMPT = "my-very-private-prompt-7731"


def test_logs_have_request_ids_and_no_secrets(gateway: RunningServer, caplog: pytest.LogCaptureFixture,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": PROMPT}]}
    with gateway.http(gateway.admin_key) as http:
        http.post("/v1/chat/completions", json=body, headers={"x-request-id": "log-probe-1"})
        http.post("/v1/chat/completions", json={**body, "model": "error-401"})
        http.post("/v1/chat/completions", json={**body, "stream": True})
        http.post("/v1/chat/completions", json={**body, "model": "fail-mid-stream", "stream": True})
    with gateway.http("sk-sy-not-a-real-key-but-secret-looking") as http:
        http.get("/v1/models")
    time.sleep(0.2)  # access lines are written in batches, at most 50 ms late
    lines = [JsonFormatter().format(r) for r in caplog.records]
    lines += [line for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    access = [json.loads(line) for line in lines if '"switchyard.access"' in line]
    probe = [a for a in access if a["request_id"] == "log-probe-1"]
    assert probe and probe[0]["status"] == 200 and probe[0]["path"] == "/v1/chat/completions"
    assert probe[0]["key_id"].startswith("key_")
    text = "\n".join(lines)
    for secret in (PROMPT, gateway.admin_key, UPSTREAM_KEY, "sk-sy-not-a-real-key", "sk-abc"):
        assert secret not in text, f"{secret!r} reached the logs"
