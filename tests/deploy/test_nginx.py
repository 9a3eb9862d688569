"""The shipped nginx configs (deploy/nginx/), run by a real nginx in front of a real
``switchyard serve``, driven over HTTPS by the official openai SDK.

The files under test are the shipped ones: the test only swaps their placeholders (ports,
certificate paths, log directory, upstream address) and wraps them in a minimal top-level
nginx.conf, as /etc/nginx/nginx.conf would include them inside ``http {}``.

nginx is required. CI installs it (.ci/run) and sets SWITCHYARD_REQUIRE_NGINX=1, so there a
missing nginx fails; elsewhere the module is skipped, saying how to install it.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from tests.cli.support import ServeProcess, serve, wait_until
from tests.conftest import UPSTREAM_KEY
from tests.deploy.tls import TlsFiles, client_context, make_tls
from tests.fakes import FakeOpenAI
from tests.harness import free_port

ROOT = Path(__file__).resolve().parents[2]
FULL_CONF = ROOT / "deploy" / "nginx" / "switchyard.conf"
MINIMAL_CONF = ROOT / "deploy" / "nginx" / "switchyard-minimal.conf"
API_KEY = "sk-deploy-test-0123456789abcdefghijklmnop"
MIB = 1024 * 1024
ALT_CLIENT = "127.0.0.3"  # another loopback address, so nginx's client differs from its own address


def _find_nginx() -> str:
    places = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")
    found = shutil.which("nginx") or next((p for p in places if os.access(p, os.X_OK)), None)
    if found:
        return found
    why = "nginx is not installed (Debian/Ubuntu: apt-get install nginx); the deploy/nginx tests need a real nginx"
    if os.environ.get("SWITCHYARD_REQUIRE_NGINX"):
        pytest.fail(why + ", and SWITCHYARD_REQUIRE_NGINX is set (CI installs it)", pytrace=False)
    pytest.skip(why)


# ------------------------------------------------------------------------------ config rendering


def _substitute(text: str, replacements: list[tuple[str, str, int]]) -> str:
    """Replace each placeholder, insisting it occurs exactly as often as expected: if the shipped
    file changes shape, the test says so instead of silently testing something else."""
    for old, new, count in replacements:
        found = text.count(old)
        assert found == count, f"expected {count}x {old!r} in the shipped config, found {found}"
        text = text.replace(old, new)
    return text


def render_full(https_port: int, http_port: int, upstream_port: int, tls: TlsFiles, logs: Path) -> str:
    return _substitute(FULL_CONF.read_text(), [
        ("listen 443 ssl http2;", f"listen 127.0.0.1:{https_port} ssl http2;", 1),
        ("listen [::]:443 ssl http2;", "", 1),  # tests bind loopback IPv4 only
        ("listen 80;", f"listen 127.0.0.1:{http_port};", 1),
        ("listen [::]:80;", "", 1),
        ("/etc/ssl/switchyard/CHANGE-ME-fullchain.pem", str(tls.cert), 1),
        ("/etc/ssl/switchyard/CHANGE-ME-privkey.pem", str(tls.key), 1),
        ("server 127.0.0.1:8080;", f"server 127.0.0.1:{upstream_port};", 1),
        ("/var/log/nginx/", f"{logs}/", 2),
    ])


def render_minimal(https_port: int, upstream_port: int, tls: TlsFiles) -> str:
    return _substitute(MINIMAL_CONF.read_text(), [
        ("listen 443 ssl;", f"listen 127.0.0.1:{https_port} ssl;", 1),
        ("/etc/nginx/ssl/YOUR_CERT.crt", str(tls.cert), 1),
        ("/etc/nginx/ssl/YOUR_CERT.key", str(tls.key), 1),
        ("proxy_pass http://192.168.8.100:8080;", f"proxy_pass http://127.0.0.1:{upstream_port};", 1),
    ])


MAIN_CONF = """\
{user}
daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 256; }}
http {{
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    access_log {d}/access.log;
    default_type application/octet-stream;
{includes}
}}
"""


class Nginx:
    """nginx in the foreground (``daemon off``), everything under one directory."""

    def __init__(self, directory: Path, sites: dict[str, str], ports: list[int]) -> None:
        self.exe = _find_nginx()
        self.dir = directory
        self.ports = ports
        (directory / "tmp").mkdir(parents=True, exist_ok=True)
        (directory / "logs").mkdir(exist_ok=True)
        for name, text in sites.items():
            (directory / name).write_text(text)
        self.conf = directory / "nginx.conf"
        self.conf.write_text(MAIN_CONF.format(
            d=directory,
            # as root, nginx would hand requests to 'nobody', who cannot enter pytest's 0700 tmp dirs
            user="user root;" if os.geteuid() == 0 else "",
            includes="\n".join(f"    include {directory / name};" for name in sites),
        ))
        self.proc: subprocess.Popen[bytes] | None = None

    def _cmd(self, *extra: str) -> list[str]:
        return [self.exe, "-p", f"{self.dir}/", "-e", str(self.dir / "error.log"), "-c", str(self.conf), *extra]

    def check(self) -> subprocess.CompletedProcess[str]:
        """``nginx -t``: the syntax and semantic check users run before reloading."""
        return subprocess.run(self._cmd("-t"), capture_output=True, text=True, timeout=30)

    def error_log(self) -> str:
        path = self.dir / "error.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def start(self) -> Nginx:
        checked = self.check()
        assert checked.returncode == 0, f"nginx -t failed:\n{checked.stderr}"
        self.proc = subprocess.Popen(self._cmd(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        deadline = time.monotonic() + 15
        pending = list(self.ports)
        while pending:
            if self.proc.poll() is not None:
                raise AssertionError(f"nginx exited with {self.proc.returncode}:\n{self.error_log()}")
            try:
                with socket.create_connection(("127.0.0.1", pending[0]), timeout=1):
                    pending.pop(0)
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"nginx is not listening on {pending}:\n{self.error_log()}") from None
                time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)  # fast shutdown: master and workers
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.wait(10)


@contextlib.contextmanager
def running_nginx(directory: Path, sites: dict[str, str], ports: list[int]) -> Iterator[Nginx]:
    nginx = Nginx(directory, sites, ports)
    try:
        yield nginx.start()
    finally:
        nginx.stop()


# ------------------------------------------------------------------------------ fixtures


def _switchyard_config(path: Path, upstream: FakeOpenAI) -> Path:
    config = {
        "providers": {"fake": {"type": "openai", "base_url": upstream.base_url, "api_key": UPSTREAM_KEY}},
        "models": [
            {"alias": "chat", "provider": "fake", "model": "gpt-4o-mini"},
            {"alias": "slow", "provider": "fake", "model": "slow-stream"},
            {"alias": "embed", "provider": "fake", "model": "text-embedding-3-small"},
        ],
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@dataclass
class Stack:
    tls: TlsFiles
    switchyard: ServeProcess
    nginx: Nginx
    https_port: int  # switchyard.conf
    http_port: int  # switchyard.conf's redirect server
    minimal_port: int  # switchyard-minimal.conf

    def base(self, variant: str = "full") -> str:
        return f"https://localhost:{self.https_port if variant == 'full' else self.minimal_port}"

    def http(self, variant: str = "full", local_address: str | None = None, **kwargs: Any) -> httpx.Client:
        transport = httpx.HTTPTransport(verify=client_context(self.tls), local_address=local_address)
        return httpx.Client(base_url=self.base(variant), transport=transport, timeout=30, **kwargs)

    def sdk(self, variant: str = "full") -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base(variant) + "/v1", api_key=API_KEY, max_retries=0,
                             http_client=httpx.Client(verify=client_context(self.tls), timeout=30))


def access_log(server: ServeProcess, request_id: str) -> dict[str, Any]:
    """Switchyard's JSON access-log line (stderr) for one request id."""

    def find() -> dict[str, Any] | None:
        for line in server.stderr.splitlines():
            if request_id in line and line.startswith("{"):
                entry: dict[str, Any] = json.loads(line)
                if entry.get("logger") == "switchyard.access" and entry.get("request_id") == request_id:
                    return entry
        return None

    found: dict[str, Any] = wait_until(find, timeout=5, what=f"Switchyard's access-log line for {request_id}")
    return found


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def switchyard(tmp_path_factory: pytest.TempPathFactory, fake_openai: FakeOpenAI) -> Iterator[ServeProcess]:
    work = tmp_path_factory.mktemp("switchyard")
    config = _switchyard_config(work / "switchyard.yaml", fake_openai)
    with serve(work, work / "data", "--api-key", API_KEY, config=config) as server:
        yield server


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, tls: TlsFiles, switchyard: ServeProcess) -> Iterator[Stack]:
    _find_nginx()  # skip (or fail in CI) before writing anything
    directory = tmp_path_factory.mktemp("nginx")
    https_port, http_port, minimal_port = free_port(), free_port(), free_port()
    sites = {
        "switchyard.conf": render_full(https_port, http_port, switchyard.port, tls, directory / "logs"),
        "switchyard-minimal.conf": render_minimal(minimal_port, switchyard.port, tls),
    }
    with running_nginx(directory, sites, [https_port, http_port, minimal_port]) as nginx:
        yield Stack(tls, switchyard, nginx, https_port, http_port, minimal_port)


# ------------------------------------------------------------------------------ tests


def test_nginx_t_accepts_both_shipped_files(stack: Stack) -> None:
    result = stack.nginx.check()
    assert result.returncode == 0, result.stderr
    assert "syntax is ok" in result.stderr and "test is successful" in result.stderr


@pytest.mark.parametrize("variant", ["full", "minimal"])
def test_openai_sdk_over_https(stack: Stack, variant: str) -> None:
    client = stack.sdk(variant)
    try:
        reply = client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hello there"}])
        assert reply.choices[0].message.content
        assert reply.usage is not None and reply.usage.total_tokens > 0

        chunks = list(client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hello there"}], stream=True,
        ))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == reply.choices[0].message.content  # the whole stream made it through
        assert chunks[-1].choices[0].finish_reason == "stop"

        vectors = client.embeddings.create(model="embed", input=["a", "b"])  # SDK default: base64
        assert [d.index for d in vectors.data] == [0, 1]
        assert len(vectors.data[0].embedding) >= 8
        with stack.switchyard.http(API_KEY) as direct:  # the same vectors as without nginx
            plain = direct.post("/v1/embeddings", json={"model": "embed", "input": ["a", "b"]}).json()
        for got, want in zip(vectors.data, plain["data"], strict=True):
            assert got.embedding == pytest.approx(want["embedding"], rel=1e-6)
    finally:
        client.close()


@pytest.mark.parametrize("variant", ["full", "minimal"])
def test_stream_flows_through_nginx_chunk_by_chunk(stack: Stack, variant: str) -> None:
    """slow-stream sends a chunk every 0.2 s; buffered, they would arrive together at the end."""
    client = stack.sdk(variant)
    wanted = 12
    arrivals: list[float] = []
    try:
        started = time.monotonic()
        stream = client.chat.completions.create(
            model="slow", messages=[{"role": "user", "content": "tick"}], stream=True,
        )
        with stream:
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    arrivals.append(time.monotonic() - started)
                    if len(arrivals) == wanted:
                        break  # no need to wait for all 50: closing cancels the rest
    finally:
        client.close()
    assert len(arrivals) == wanted
    total = arrivals[-1]
    # Produced over ~2.2 s (11 gaps of 0.2 s): the first must be there long before the last.
    assert arrivals[0] < total - 1.0, arrivals
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert sum(gap > 0.1 for gap in gaps) >= len(gaps) // 2, f"chunks arrived in bursts: {arrivals}"


@pytest.mark.parametrize("variant", ["full", "minimal"])
def test_switchyard_sees_the_client_address_nginx_saw_and_no_spoofed_one(stack: Stack, variant: str) -> None:
    headers = {"Authorization": f"Bearer {API_KEY}", "X-Forwarded-For": "6.6.6.6"}
    # A client on another address: Switchyard logs that address, which it can only know from
    # the X-Forwarded-For nginx set (nginx itself always connects from 127.0.0.1).
    rid = f"deploy-xff-alt-{variant}"
    with stack.http(variant, local_address=ALT_CLIENT) as http:
        assert http.get("/v1/models", headers={**headers, "X-Request-ID": rid}).status_code == 200
    assert access_log(stack.switchyard, rid)["client"] == ALT_CLIENT

    # A client on 127.0.0.1, which Switchyard trusts as a proxy: with an appended chain
    # ("6.6.6.6, 127.0.0.1") Switchyard would skip the trusted hop and log 6.6.6.6.
    rid = f"deploy-xff-local-{variant}"
    with stack.http(variant) as http:
        response = http.get("/v1/models", headers={**headers, "X-Request-ID": rid})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == rid
    assert access_log(stack.switchyard, rid)["client"] == "127.0.0.1"


def test_nginx_logs_the_same_request_id_as_switchyard(stack: Stack) -> None:
    with stack.http() as http:
        mine = http.get("/health", headers={"X-Request-ID": "deploy-rid-mine"})
        theirs = http.get("/health")
    assert mine.headers["x-request-id"] == "deploy-rid-mine"
    generated = theirs.headers["x-request-id"]
    assert len(generated) == 32  # nginx's $request_id, passed on as X-Request-ID
    access_log(stack.switchyard, generated)
    log = stack.nginx.dir / "logs" / "switchyard.access.log"
    wait_until(lambda: f"rid={generated}" in log.read_text() and "rid=deploy-rid-mine" in log.read_text(),
               timeout=5, what="nginx's access log")


def test_forwarded_for_is_ignored_from_an_untrusted_peer(tmp_path: Path, switchyard: ServeProcess) -> None:
    spoof = {"X-Forwarded-For": "6.6.6.6"}
    # From a trusted peer (the default 127.0.0.1), Switchyard believes the header: which is why
    # nginx must set it rather than let clients' values through.
    with switchyard.http() as http:
        http.get("/health", headers={**spoof, "X-Request-ID": "deploy-direct-trusted"})
    assert access_log(switchyard, "deploy-direct-trusted")["client"] == "6.6.6.6"

    with serve(tmp_path, tmp_path / "data", "--api-key", API_KEY, "--forwarded-allow-ips", "10.9.9.9") as other:
        with other.http() as http:
            http.get("/health", headers={**spoof, "X-Request-ID": "deploy-direct-untrusted"})
        assert access_log(other, "deploy-direct-untrusted")["client"] == "127.0.0.1"


def test_tls_versions_and_security_headers(stack: Stack) -> None:
    with stack.http() as http:
        ok = http.get("/health")
        denied = http.get("/v1/models")  # no key: Switchyard's 401
        missing = http.get("/nope", headers={"Authorization": f"Bearer {API_KEY}"})
    for response, status in ((ok, 200), (denied, 401), (missing, 404)):
        assert response.status_code == status
        h = response.headers
        assert h.get_list("strict-transport-security") == ["max-age=63072000"]
        assert h.get_list("x-content-type-options") == ["nosniff"]  # once: Switchyard's copy is hidden
        assert h.get_list("x-frame-options") == ["DENY"]
        assert h.get_list("referrer-policy") == ["no-referrer"]
        assert h["server"] == "nginx"  # server_tokens off: no version
        assert "retry-after" not in h

    context = client_context(stack.tls)
    for cap, expected in ((None, "TLSv1.3"), (ssl.TLSVersion.TLSv1_2, "TLSv1.2")):
        if cap is not None:
            context.maximum_version = cap
        with socket.create_connection(("127.0.0.1", stack.https_port), timeout=5) as raw, \
                context.wrap_socket(raw, server_hostname="localhost") as tls_sock:
            assert tls_sock.version() == expected


def test_plain_http_redirects_to_https(stack: Stack) -> None:
    with httpx.Client(timeout=10) as http:
        response = http.get(f"http://127.0.0.1:{stack.http_port}/v1/models?x=1",
                            headers={"Host": "switchyard.example.com"})
    assert response.status_code == 301
    assert response.headers["location"] == "https://switchyard.example.com/v1/models?x=1"


def _chat_body(size: int) -> bytes:
    """A chat request of exactly ``size`` bytes, for a model no one serves."""
    head, tail = b'{"model":"no-such-model","messages":[{"role":"user","content":"', b'"}]}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


@pytest.mark.parametrize("variant", ["full", "minimal"])
def test_body_limit_matches_switchyards(stack: Stack, variant: str) -> None:
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    with stack.http(variant) as http:
        # Exactly 16 MiB: nginx passes it on and Switchyard accepts it (then finds no such model).
        rid = f"deploy-16mib-{variant}"
        at_limit = http.post("/v1/chat/completions", content=_chat_body(16 * MIB),
                             headers={**headers, "X-Request-ID": rid})
        assert at_limit.status_code == 404, at_limit.text
        assert at_limit.json()["error"]["code"] == "model_not_found"
        # One byte more: nginx refuses it, Switchyard never sees it.
        rid = f"deploy-over-{variant}"
        over = http.post("/v1/chat/completions", content=_chat_body(16 * MIB + 1),
                         headers={**headers, "X-Request-ID": rid})
    assert over.status_code == 413
    if variant == "full":  # the full config answers in OpenAI's error shape
        assert over.headers["content-type"] == "application/json"
        assert over.json()["error"]["code"] == "request_too_large"
        assert over.headers["strict-transport-security"]
    assert rid not in stack.switchyard.stderr


def test_rate_limit_answers_429(tmp_path: Path, tls: TlsFiles, switchyard: ServeProcess) -> None:
    """The shipped limit (10 r/s, burst 40) on a fresh nginx, so no other test shares its bucket."""
    https_port, http_port = free_port(), free_port()
    site = render_full(https_port, http_port, switchyard.port, tls, tmp_path / "logs")
    with running_nginx(tmp_path, {"switchyard.conf": site}, [https_port]), \
            httpx.Client(base_url=f"https://localhost:{https_port}", verify=client_context(tls), timeout=10) as http:
        statuses: list[int] = []
        limited = None
        for _ in range(200):
            response = http.get("/health")
            statuses.append(response.status_code)
            if response.status_code == 429:
                limited = response
                break
    assert limited is not None, f"never limited: {statuses}"
    assert statuses.count(200) >= 40  # the burst is served
    assert set(statuses) == {200, 429}
    assert limited.json()["error"]["type"] == "rate_limit_error"
    assert limited.headers["retry-after"] == "1"
    assert limited.headers["x-content-type-options"] == "nosniff"


def test_unreachable_switchyard_is_a_json_502(tmp_path: Path, tls: TlsFiles) -> None:
    https_port, http_port = free_port(), free_port()
    site = render_full(https_port, http_port, free_port(), tls, tmp_path / "logs")  # nothing listens there
    with running_nginx(tmp_path, {"switchyard.conf": site}, [https_port]), \
            httpx.Client(base_url=f"https://localhost:{https_port}", verify=client_context(tls), timeout=10) as http:
        response = http.get("/v1/models")
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "gateway_unreachable"
