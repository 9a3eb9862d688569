"""``switchyard init``: the files it writes make a working installation (real subprocesses:
init, config check, serve, status, doctor, stop; systemd-analyze and nginx where installed)."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.cli.support import KEY_RE, SWITCHYARD, clean_env, run_cli, serve
from tests.conftest import UPSTREAM_KEY
from tests.fakes import FakeOllama, FakeOpenAI
from tests.harness import free_port


def _env_file(path: Path) -> dict[str, str]:
    return _env_values(path.read_text(encoding="utf-8"))


def _env_values(text: str) -> dict[str, str]:
    """KEY=value lines, as systemd's EnvironmentFile= (and a shell's `set -a; .`) read them."""
    values = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip().strip('"')
    return values


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_yes_makes_a_working_install(tmp_path: Path, fake_ollama: FakeOllama) -> None:
    inst = tmp_path / "inst"
    port = free_port()
    result = run_cli("init", "--yes", "--dir", inst, "--port", port, "--base-url", fake_ollama.base_url, cwd=tmp_path)
    assert result.returncode == 0, result
    config, env_path, data = inst / "switchyard.yaml", inst / "switchyard.env", inst / "data"
    assert sorted(p.name for p in inst.iterdir()) == ["data", "switchyard.env", "switchyard.yaml"]
    assert _mode(env_path) == 0o600
    assert _mode(data) == 0o700
    assert _mode(config) & 0o022 == 0

    env = _env_file(env_path)
    assert env["SWITCHYARD_CONFIG_FILE"] == str(config)
    assert len(env["SWITCHYARD_SECRET_KEY"]) >= 32
    assert KEY_RE.fullmatch(env["SWITCHYARD_API_KEY"])
    assert len(env["SWITCHYARD_MASTER_KEY"]) >= 32  # a live setting, not a comment
    for secret in (env["SWITCHYARD_SECRET_KEY"], env["SWITCHYARD_API_KEY"], env["SWITCHYARD_MASTER_KEY"]):
        assert secret not in result.stdout + result.stderr + config.read_text()

    parsed = yaml.safe_load(config.read_text())
    assert parsed["bundled_models"] is True  # `on`: the local install's bundled models stay served
    assert parsed["default_provider"] == "ollama"
    assert parsed["providers"]["ollama"] == {"type": "ollama", "base_url": fake_ollama.base_url,
                                             "prefix_routing": True}
    assert (parsed["host"], parsed["port"], parsed["data_dir"]) == ("127.0.0.1", port, str(data))

    check = run_cli("config", "check", "--config", config, cwd=tmp_path)
    assert check.returncode == 0, check
    assert "ollama/*" in check.stdout
    served = {line.split()[0]: line.split()[1] for line in check.stdout.splitlines()[1:]}
    assert served["smollm2-135m-instruct"] == served["all-minilm-l6-v2"] == "local", check

    # serve with the env file's values (as systemd's EnvironmentFile= gives them): no flags needed.
    admin = env["SWITCHYARD_API_KEY"]
    with serve(tmp_path, data, env=env, port=port) as server:
        assert not KEY_RE.search(server.stdout), "a static admin key is set: no first key is generated"
        with server.http(admin) as client:
            assert client.get("/admin/status").status_code == 200
            models = client.get("/v1/models")
            assert models.status_code == 200, models.text
            assert {"smollm2-135m-instruct", "all-minilm-l6-v2"} <= {m["id"] for m in models.json()["data"]}
        with server.http("sk-sy-not-the-key") as client:
            assert client.get("/v1/models").status_code == 401

        status = run_cli("status", cwd=tmp_path, env=env)  # URL and key from the env file and config
        assert status.returncode == 0, status
        assert f"at http://127.0.0.1:{port}: healthy, ready" in status.stdout
        doctor = run_cli("doctor", cwd=tmp_path, env=env)
        assert doctor.returncode == 0, doctor
        assert "is in use by the running switchyard" in doctor.stdout

        stop = run_cli("stop", cwd=tmp_path, env=env)
        assert stop.returncode == 0, stop
        assert server.wait(15) == 0, server.describe()
    assert not (data / "switchyard.pid").exists()


def test_init_refuses_to_overwrite(tmp_path: Path) -> None:
    first = run_cli("init", "-y", "--dir", tmp_path / "inst", cwd=tmp_path)
    assert first.returncode == 0, first
    env_path = tmp_path / "inst" / "switchyard.env"
    before = env_path.read_text()

    again = run_cli("init", "-y", "--dir", tmp_path / "inst", "--systemd", cwd=tmp_path)
    assert again.returncode == 1, again
    assert "refusing to overwrite" in again.stderr and str(env_path) in again.stderr
    assert env_path.read_text() == before
    assert not (tmp_path / "inst" / "switchyard.service").exists(), "nothing is written when one file exists"

    forced = run_cli("init", "-y", "--dir", tmp_path / "inst", "--force", cwd=tmp_path)
    assert forced.returncode == 0, forced
    assert _env_file(env_path)["SWITCHYARD_SECRET_KEY"] != _env_values(before)["SWITCHYARD_SECRET_KEY"]
    assert _mode(env_path) == 0o600


def test_init_interactive_openai(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    port = free_port()
    answers = "\n".join(["openai", fake_openai.base_url, UPSTREAM_KEY, str(port), "", "n", "n"]) + "\n"
    proc = subprocess.run(
        [*SWITCHYARD, "init", "--dir", str(tmp_path / "inst")], input=answers, cwd=tmp_path,
        capture_output=True, text=True, timeout=60, env=clean_env(),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert UPSTREAM_KEY not in proc.stdout  # typed at a hidden prompt
    config = tmp_path / "inst" / "switchyard.yaml"
    parsed = yaml.safe_load(config.read_text())
    assert parsed["providers"]["openai"] == {"type": "openai", "base_url": fake_openai.base_url,
                                             "prefix_routing": True, "api_key": "os.environ/OPENAI_API_KEY"}
    assert parsed["port"] == port
    env = _env_file(tmp_path / "inst" / "switchyard.env")
    assert env["OPENAI_API_KEY"] == UPSTREAM_KEY
    assert not (tmp_path / "inst" / "switchyard.service").exists()

    doctor = run_cli("doctor", cwd=tmp_path, env=env)
    assert doctor.returncode == 0, doctor
    assert f"openai (openai, {fake_openai.base_url}): reachable" in doctor.stdout
    assert "providers.openai.api_key: $OPENAI_API_KEY is set" in doctor.stdout


def test_init_no_bundled_models_serves_the_upstream_only(tmp_path: Path) -> None:
    result = run_cli("init", "-y", "--no-bundled-models", "--dir", tmp_path / "inst", cwd=tmp_path)
    assert result.returncode == 0, result
    assert yaml.safe_load((tmp_path / "inst" / "switchyard.yaml").read_text())["bundled_models"] is False
    check = run_cli("config", "check", "--config", tmp_path / "inst" / "switchyard.yaml", cwd=tmp_path)
    assert check.returncode == 0, check
    assert "smollm2" not in check.stdout and "ollama/*" in check.stdout


def _git_work_tree(path: Path) -> Path:
    path.mkdir()
    subprocess.run(["git", "init", "-q", str(path)], check=True, capture_output=True, timeout=60)
    return path


def _git_untracked(repo: Path) -> set[str]:
    out = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=all"],
                         check=True, capture_output=True, text=True, timeout=60).stdout
    return {line[3:] for line in out.splitlines()}


def test_init_yes_in_a_git_work_tree_writes_the_secrets_outside_it(tmp_path: Path, fake_ollama: FakeOllama) -> None:
    repo = _git_work_tree(tmp_path / "repo")
    config_home = tmp_path / "config-home"
    result = run_cli("init", "--yes", "--dir", repo / "deploy", "--base-url", fake_ollama.base_url, "--port",
                     free_port(), cwd=repo, env={"XDG_CONFIG_HOME": str(config_home)})
    assert result.returncode == 0, result
    env_path = config_home / "switchyard" / "switchyard.env"
    assert f"wrote {env_path}  (secrets, mode 0600" in result.stdout and "outside the git work tree" in result.stdout
    assert _mode(env_path) == 0o600 and _mode(env_path.parent) == 0o700
    assert not (repo / "deploy" / "switchyard.env").exists()
    assert _git_untracked(repo) == {"deploy/switchyard.yaml"}  # no secret for git to pick up
    env = _env_file(env_path)
    assert env["SWITCHYARD_CONFIG_FILE"] == str(repo / "deploy" / "switchyard.yaml")
    assert f"set -a; . {env_path}; set +a" in result.stdout

    doctor = run_cli("doctor", cwd=tmp_path, env=env)  # the env file leads to the config
    assert doctor.returncode == 0, doctor
    assert "secret_key is set" in doctor.stdout


@pytest.mark.parametrize("answer", ["y", "n"])
def test_init_in_a_git_work_tree_asks_first(tmp_path: Path, answer: str) -> None:
    repo = _git_work_tree(tmp_path / "repo")
    config_home = tmp_path / "config-home"
    answers = "\n".join(["ollama", "http://127.0.0.1:11434", "8080", "", "n", "n", answer]) + "\n"
    proc = subprocess.run(
        [*SWITCHYARD, "init"], input=answers, cwd=repo, capture_output=True, text=True, timeout=60,
        env=clean_env({"XDG_CONFIG_HOME": str(config_home)}),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{repo} is in the git work tree {repo}. Write the secrets" in proc.stdout
    inside, outside = repo / "switchyard.env", config_home / "switchyard" / "switchyard.env"
    if answer == "y":
        assert inside.exists() and not outside.exists()
        assert _mode(inside) == 0o600
        assert (repo / ".gitignore").read_text().splitlines() == ["switchyard.env"]
        assert f"wrote {repo / '.gitignore'}" in proc.stdout
        assert _git_untracked(repo) == {".gitignore", "switchyard.yaml"}  # git ignores the secrets
    else:
        assert outside.exists() and not inside.exists()
        assert not (repo / ".gitignore").exists()
        assert _git_untracked(repo) == {"switchyard.yaml"}


def test_init_nginx_needs_a_host_name(tmp_path: Path) -> None:
    result = run_cli("init", "-y", "--dir", tmp_path, "--nginx", cwd=tmp_path)
    assert result.returncode == 2, result
    assert "--host NAME" in result.stderr
    bad = run_cli("init", "-y", "--dir", tmp_path, "--host", "evil;host", cwd=tmp_path)
    assert bad.returncode == 2, bad
    assert list(tmp_path.iterdir()) == []


def test_init_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    result = run_cli("init", "-y", "--dir", tmp_path / "inst", "--systemd", cwd=tmp_path)
    assert result.returncode == 0, result
    unit = tmp_path / "inst" / "switchyard.service"
    text = unit.read_text()
    assert f"EnvironmentFile={tmp_path / 'inst' / 'switchyard.env'}" in text
    assert f"--config {tmp_path / 'inst' / 'switchyard.yaml'}" in text
    assert f"ReadWritePaths={tmp_path / 'inst' / 'data'}" in text
    verify = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert str(unit) not in verify.stdout + verify.stderr, verify.stdout + verify.stderr


def test_init_nginx_config_passes_nginx_t(tmp_path: Path) -> None:
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    openssl = shutil.which("openssl")
    if nginx is None or openssl is None:
        pytest.skip("nginx and openssl are needed (Debian: apt-get install nginx)")
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
         "-keyout", "key.pem", "-out", "cert.pem", "-subj", "/CN=gw.example.test"],
        cwd=tmp_path, check=True, capture_output=True, timeout=60,
    )
    result = run_cli("init", "-y", "--dir", tmp_path / "inst", "--port", "18123", "--nginx", "--host",
                     "gw.example.test", "--ssl-certificate", tmp_path / "cert.pem", "--ssl-certificate-key",
                     tmp_path / "key.pem", cwd=tmp_path)
    assert result.returncode == 0, result
    conf = tmp_path / "inst" / "switchyard.nginx.conf"
    text = conf.read_text()
    for needed in ("server_name gw.example.test;", "server 127.0.0.1:18123;", "proxy_buffering off;",
                   "client_max_body_size 16m;", "proxy_read_timeout 3600s;", "X-Forwarded-Proto $scheme",
                   f"ssl_certificate     {tmp_path / 'cert.pem'};"):
        assert needed in text, needed
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    temp = "\n".join(f"  {kind}_temp_path {prefix}/{kind};" for kind in ("client_body", "proxy", "fastcgi",
                                                                           "uwsgi", "scgi"))
    wrapper = prefix / "nginx.conf"
    wrapper.write_text(
        f"pid {prefix}/nginx.pid;\nerror_log {prefix}/error.log;\nevents {{}}\n"
        f"http {{\n  access_log off;\n{temp}\n  include {conf};\n}}\n"
    )
    test = subprocess.run([nginx, "-t", "-p", str(prefix), "-c", str(wrapper), "-e", str(prefix / "error.log")],
                          capture_output=True, text=True, timeout=60)
    assert test.returncode == 0, test.stdout + test.stderr
    assert "test is successful" in test.stderr
