"""No secret in any byte the gateway emits: an upstream of each kind that echoes the credential it
was sent (in a JSON error, in an error event mid-stream, in a plain-text 500) never gets it to
the client, ``/admin/status``, the usage rows or the logs. The redaction itself is one function
where upstream bytes come in (``core/redaction.py``); its stream handling is tested here too."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from switchyard.core.redaction import Redactor
from switchyard.observability.logging import JsonFormatter
from tests.contract.test_chat import HELLO
from tests.fakes.echo_upstream import EchoingUpstream
from tests.harness import RunningServer, run_server

CREDENTIALS = {
    "oa": "sk-proj-openaiSECRET0123456789abcdef",
    "az": "azureSECRET0123456789abcdef0123",
    "ant": "sk-ant-api03-anthropicSECRET0123456789",
    "gem": "AIzaSyGeminiSECRET0123456789abcdefghij",
    "oll": "ollamaSECRET0123456789abcdef0123",
}
MASTER_KEY = "sk-master-SECRET-0123456789abcdefghij"
SERVER_SECRET = "server-secret-SECRET-0123456789abcdefghij"
SECRETS = [*CREDENTIALS.values(), MASTER_KEY, SERVER_SECRET]
MODES = ("json-error", "stream-error", "text-500")


@pytest.fixture(scope="module")
def echo() -> Iterator[EchoingUpstream]:
    with EchoingUpstream() as fake:
        yield fake


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, echo: EchoingUpstream) -> Iterator[RunningServer]:
    base = {"oa": echo.url + "/v1", "az": echo.url, "ant": echo.url + "/v1", "gem": echo.url + "/v1beta",
            "oll": echo.url}
    kinds = {"oa": "openai", "az": "azure", "ant": "anthropic", "gem": "gemini", "oll": "ollama"}
    providers = {name: {"type": kinds[name], "base_url": base[name], "api_key": CREDENTIALS[name],
                        "prefix_routing": True, "cooldown_failures": 0} for name in kinds}
    with run_server(tmp_path_factory.mktemp("redaction"), providers=providers, secret_key=SERVER_SECRET,
                    master_key=MASTER_KEY) as srv:
        yield srv


def leaked(text: str | bytes) -> list[str]:
    raw = text.encode() if isinstance(text, str) else text
    return [s for s in SECRETS if s.encode() in raw]


@pytest.mark.parametrize("provider", list(CREDENTIALS))
def test_an_echoed_credential_never_reaches_the_client_status_usage_or_logs(
    server: RunningServer, echo: EchoingUpstream, provider: str, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    seen: dict[str, bytes] = {}
    with server.http(server.admin_key) as http:
        for mode in ("json-error", "text-500"):
            resp = http.post("/v1/chat/completions", json={"model": f"{provider}/{mode}", "messages": HELLO})
            assert resp.status_code >= 500 and "error" in resp.json()
            seen[mode] = resp.content
        with http.stream("POST", "/v1/chat/completions",
                         json={"model": f"{provider}/stream-error", "messages": HELLO, "stream": True}) as resp:
            assert resp.status_code == 200
            seen["stream-error"] = resp.read()
        for path, body in (("/v1/responses", {"input": "hi"}), ("/v1/messages", {"max_tokens": 16, "messages": HELLO})):
            for mode in ("json-error", "stream-error"):  # the Responses and Anthropic shapes of the same failures
                with http.stream("POST", path, json={"model": f"{provider}/{mode}", "stream": True, **body}) as resp:
                    seen[f"{path} {mode}"] = resp.read()
        status = http.get("/admin/status").content
    sent = [r.headers for r in echo.requests if any(m in r.path + r.raw_body.decode() for m in MODES)]
    assert any(CREDENTIALS[provider] in json.dumps(dict(h)) for h in sent)  # it was sent, and echoed
    assert b"[redacted]" in seen["json-error"]  # the echo came through, without the secret
    assert b'"Hi"' in seen["stream-error"] and b'"error"' in seen["stream-error"]  # the error came mid-stream
    for mode, raw in seen.items():
        assert not leaked(raw), (mode, raw)
    assert b"[redacted]" in status and not leaked(status)
    assert b"[redacted]" in seen["/v1/responses stream-error"] + seen["/v1/messages json-error"]
    rows = server.usage_rows(wait_for=3)
    assert not leaked(json.dumps(rows, default=str))
    assert not leaked("\n".join(JsonFormatter().format(r) for r in caplog.records))


def test_a_secret_split_across_reads_is_redacted_and_nothing_else_is_held_back() -> None:
    redactor = Redactor()
    redactor.add("sk-upstream-0123456789", "short")  # too short to redact: ordinary words would go
    key = "sk-sy-" + "a" * 43  # a client key, by its shape
    text = f"data: one sk-upstream-0123456789 two {key} three short\n\n".encode()
    for cut in range(1, len(text)):
        stream = redactor.stream()
        out = stream.feed(text[:cut]) + stream.feed(text[cut:]) + stream.finish()
        assert out == b"data: one [redacted] two [redacted] three short\n\n", cut
    stream = redactor.stream()
    assert stream.feed(b"data: {}\n\n") == b"data: {}\n\n"  # a whole event is never held back
    assert stream.feed(b"data: sk-up") == b"data: "  # may be a secret's start: held until the next read
    assert stream.feed(b"date\n\n") == b"sk-update\n\n"
    assert redactor.redact(f"key {key}!") == "key [redacted]!"
