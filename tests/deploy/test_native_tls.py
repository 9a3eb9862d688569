"""``switchyard serve --ssl-certfile --ssl-keyfile``: HTTPS without a proxy in front."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.cli.support import ServeProcess, run_cli, serve, write_config
from tests.conftest import UPSTREAM_KEY
from tests.deploy.tls import TlsFiles, client_context, make_tls
from tests.fakes import FakeOpenAI
from tests.harness import free_port

API_KEY = "sk-native-tls-test-0123456789abcdefghijkl"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def https_server(
    tmp_path_factory: pytest.TempPathFactory, tls: TlsFiles, fake_openai: FakeOpenAI
) -> Iterator[ServeProcess]:
    work = tmp_path_factory.mktemp("native-tls")
    config = write_config(work / "switchyard.yaml", fake_openai.base_url, UPSTREAM_KEY)
    with serve(work, work / "data", "--api-key", API_KEY, "--ssl-certfile", tls.cert, "--ssl-keyfile", tls.key,
               config=config, ready=False) as server:
        deadline = time.monotonic() + 30
        with httpx.Client(verify=client_context(tls), timeout=2) as http:
            while True:
                assert server.proc.poll() is None, f"switchyard serve exited\n{server.describe()}"
                try:
                    if http.get(f"https://localhost:{server.port}/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, f"no HTTPS answer after 30 s\n{server.describe()}"
                time.sleep(0.05)
        yield server


def test_openai_sdk_chats_and_streams_over_https(https_server: ServeProcess, tls: TlsFiles) -> None:
    assert f"listening on https://127.0.0.1:{https_server.port}/v1" in https_server.stderr
    client = openai.OpenAI(base_url=f"https://localhost:{https_server.port}/v1", api_key=API_KEY, max_retries=0,
                           http_client=httpx.Client(verify=client_context(tls), timeout=30))
    try:
        reply = client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hello there"}])
        assert reply.choices[0].message.content
        stream = client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hello there"}], stream=True,
        )
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == reply.choices[0].message.content
        assert chunks[-1].choices[0].finish_reason == "stop"
    finally:
        client.close()


def test_plain_http_to_the_https_port_gets_no_answer(https_server: ServeProcess) -> None:
    with httpx.Client(timeout=5) as http:
        with pytest.raises(httpx.TransportError):
            http.get(f"http://127.0.0.1:{https_server.port}/health")


def test_an_untrusted_certificate_is_refused_by_a_verifying_client(https_server: ServeProcess) -> None:
    """The default trust store does not know the throwaway CA: verification is really on."""
    with httpx.Client(timeout=5) as http:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            http.get(f"https://localhost:{https_server.port}/health")


@pytest.mark.parametrize("given", ["--ssl-certfile", "--ssl-keyfile"])
def test_certificate_and_key_go_together(tmp_path: Path, tls: TlsFiles, given: str) -> None:
    path = tls.cert if given == "--ssl-certfile" else tls.key
    result = run_cli("serve", "--port", str(free_port()), "--data-dir", tmp_path / "data", given, path,
                     "--api-key", API_KEY, cwd=tmp_path, timeout=30)
    assert result.returncode != 0, result
    assert "--ssl-certfile and --ssl-keyfile go together" in result.stderr, result
