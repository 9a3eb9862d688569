"""``switchyard doctor``: check an installation and name every problem, with what to do about it.

It changes nothing: a missing data dir, secret or SQLite file is reported as "created at first
start", not created. A config file with errors is reported, then checked again without the broken
fields, so one bad field does not hide the other problems.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import ssl
import stat
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from pydantic import SecretStr, ValidationError

import switchyard
from switchyard.cli.model_checks import check_local_models, check_models_configured
from switchyard.cli.ops import live_server_pid
from switchyard.cli.store_options import store_options
from switchyard.runtime import SECRET_FILE
from switchyard.service.routing import LOCAL, RoutingTable, display_url
from switchyard.settings import ENV_REF, ConfigError, Settings, load_settings, read_sources, validate

__all__ = ["doctor"]


CLOCK_SKEW_LIMIT_S = 5.0
UPSTREAM_TIMEOUT_S = 10.0
STORE_TIMEOUT_S = 10.0
CLOCK_FLOOR = datetime(2025, 1, 1, tzinfo=UTC)  # no switchyard was built before this


class Report:
    """Findings, printed as they come: ``ok``, ``WARN`` or ``FAIL``, the check, what was found,
    what to do. Warnings do not change the exit status."""

    def __init__(self) -> None:
        self.problems = 0
        self.warnings = 0

    def ok(self, check: str, message: str) -> None:
        click.echo(f"ok    {check:<12} {message}")

    def warn(self, check: str, message: str, fix: str) -> None:
        self.warnings += 1
        click.echo(f"WARN  {check:<12} {message}" + (f" -- fix: {fix}" if fix else ""))

    def fail(self, check: str, message: str, fix: str) -> None:
        self.problems += 1
        click.echo(f"FAIL  {check:<12} {message}" + (f" -- fix: {fix}" if fix else ""))


# ---------------------------------------------------------------- settings, even from a broken file
def _prune(data: dict[str, Any], loc: tuple[int | str, ...]) -> bool:
    """Remove the deepest existing node on ``loc`` (the field a validation error names)."""
    node: Any = data
    parent: Any = None
    key: int | str | None = None
    for part in loc:
        if isinstance(node, dict) and part in node:
            parent, key, node = node, part, node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            parent, key, node = node, part, node[part]
        else:
            break
    if parent is None or key is None:
        return False
    del parent[key]
    return True


def _salvage(config_file: Path | None, overrides: dict[str, Any]) -> Settings | None:
    """The settings load_settings would build, with the fields it rejected left out."""
    try:
        merged = read_sources(config_file, **overrides).values
    except ConfigError:  # the file itself cannot be read or parsed: go on with env and flags
        try:
            merged = read_sources(config_file, read_file=False, **overrides).values
        except ConfigError:
            merged = {k: v for k, v in overrides.items() if v is not None}
    for _ in range(100):
        try:
            return validate(merged)
        except ValidationError as exc:
            pruned = [_prune(merged, tuple(err["loc"])) for err in exc.errors()]
            if not any(pruned):
                return None
    return None


def _references(settings: Settings, reported: str, report: Report) -> None:
    """What load_settings checks after validation (it stops before when validation fails)."""
    problems = []
    seen: set[str] = set()
    for i, m in enumerate(settings.models):
        if m.alias in seen:
            problems.append(f"models.{i}.alias: duplicate alias '{m.alias}'")
        seen.add(m.alias)
        if m.provider not in settings.providers:
            if m.provider not in ("openai", "ollama"):
                problems.append(f"models.{i}.provider: unknown provider '{m.provider}'")
            elif m.base_url is None:
                problems.append(f"models.{i}: base_url is required when provider is a type")
    if settings.default_provider and settings.default_provider not in settings.providers:
        problems.append(f"default_provider: unknown provider '{settings.default_provider}'")
    for problem in problems:
        if problem not in reported:
            report.fail("config", f"{settings.config_file or 'settings'}: {problem}",
                        "name a provider defined under 'providers'")


def _load(config_file: Path | None, overrides: dict[str, Any], report: Report) -> Settings | None:
    try:
        settings = load_settings(config_file, **overrides)
    except ConfigError as exc:
        for line in str(exc).splitlines():
            report.fail("config", line, "correct this field ('switchyard config check' shows the same)")
        salvaged = _salvage(config_file, overrides)
        if salvaged is None:
            report.fail("config", "cannot check further without a usable configuration", "")
            return None
        _references(salvaged, str(exc), report)
        click.echo("      (the checks below leave the broken fields out)")
        return salvaged
    where = settings.config_file or "no config file (environment and defaults only)"
    report.ok("config", f"{where}: parses; providers: {len(settings.providers)}, models: {len(settings.models)}")
    return settings


def _credentials(settings: Settings, report: Report) -> Settings:
    """Report each ``os.environ/NAME`` credential; return settings without the unresolvable ones
    (their providers disabled, their models dropped) so that routing can still be checked."""
    refs: list[tuple[str, SecretStr | None, str | None, int | None]] = [
        (f"providers.{name}.api_key", cfg.api_key, name, None) for name, cfg in settings.providers.items()
    ]
    refs += [(f"models.{i}.api_key ({m.alias})", m.api_key, None, i) for i, m in enumerate(settings.models)]
    bad_providers: set[str] = set()
    bad_models: set[int] = set()
    for where, value, provider, index in refs:
        if value is None or not value.get_secret_value().startswith(ENV_REF):
            continue
        name = value.get_secret_value()[len(ENV_REF):]
        try:
            resolved = settings.resolve_secret(value)
        except ConfigError:
            report.fail("credentials", f"{where} refers to ${name}, which is not set",
                        f"set {name} in the server's environment (e.g. its switchyard.env)")
            resolved = None
        else:
            if resolved:
                report.ok("credentials", f"{where}: ${name} is set")
            else:
                report.fail("credentials", f"{where}: ${name} is empty", f"give {name} the upstream's key")
        if not resolved:
            if provider is not None:
                bad_providers.add(provider)
            if index is not None:
                bad_models.add(index)
    providers = {n: c.model_copy(update={"enabled": False}) if n in bad_providers else c
                 for n, c in settings.providers.items()}
    models, seen = [], set()
    for i, m in enumerate(settings.models):  # also drop what load_settings' reference check rejects
        known = m.provider in providers or (m.provider in ("openai", "ollama") and m.base_url is not None)
        if i not in bad_models and known and m.alias not in seen:
            models.append(m)
            seen.add(m.alias)
    default = settings.default_provider if settings.default_provider in providers else None
    return settings.model_copy(update={"providers": providers, "models": models, "default_provider": default})


def _routing(settings: Settings, report: Report) -> RoutingTable | None:
    try:
        table = RoutingTable(settings)
    except ConfigError as exc:
        report.fail("routing", str(exc).replace("\n", "; "), "correct the models and providers in the config")
        return None
    default = f", default provider {table.default}" if table.default else ", no default provider"
    report.ok("routing", f"aliases: {len(table.aliases)}, upstreams: {len(table.upstreams)}{default}")
    return table


# ---------------------------------------------------------------- files on disk
def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _data_dir(settings: Settings, report: Report) -> None:
    path = Path(settings.data_dir)
    if not path.exists():
        parent = next((p for p in path.parents if p.exists()), None)
        if parent is not None and os.access(parent, os.W_OK | os.X_OK):
            report.ok("data dir", f"{path} does not exist yet; serve creates it (mode 0700)")
        else:
            report.fail("data dir", f"{path} does not exist and {parent} is not writable",
                        f"create it: install -d -m 700 {path} (owned by the user switchyard runs as)")
        return
    if not path.is_dir():
        report.fail("data dir", f"{path} is not a directory", "point data_dir (--data-dir) at a directory")
        return
    problems = False
    if not os.access(path, os.W_OK | os.X_OK):
        problems = True
        report.fail("data dir", f"{path} is not writable by this user", "chown it to the user switchyard runs as")
    mode = _mode(path)
    if mode & 0o007:
        problems = True
        report.fail("data dir", f"{path} is open to other users (mode {mode:04o}); it holds keys' hashes and "
                    "the server secret", f"chmod 700 {path}")
    if not problems:
        report.ok("data dir", f"{path} (mode {mode:04o}, writable)")


def _secret(settings: Settings, report: Report) -> None:
    if settings.secret_key is not None:
        length = len(settings.secret_key.get_secret_value())
        if length < 32:
            report.fail("secret", f"secret_key (SWITCHYARD_SECRET_KEY) has {length} characters; it needs 32 or more",
                        "generate one: python3 -c 'import secrets; print(secrets.token_hex(32))' (keys made "
                        "with the old secret stop working)")
        else:
            report.ok("secret", f"secret_key is set ({length} characters)")
        return
    path = Path(settings.data_dir) / SECRET_FILE
    if not path.exists():
        report.ok("secret", f"{path} does not exist yet; serve generates it (mode 0600)")
        return
    problems = False
    mode = _mode(path)
    if mode & 0o077:
        problems = True
        report.fail("secret", f"{path} has mode {mode:04o}; other users may read the server secret",
                    f"chmod 600 {path}")
    try:
        length = len(path.read_text(encoding="ascii").strip())
    except (OSError, UnicodeDecodeError) as exc:
        report.fail("secret", f"{path} cannot be read ({exc})", "restore it from a backup; keys depend on it")
        return
    if length < 32:
        problems = True
        report.fail("secret", f"{path} holds {length} characters; it needs 32 or more (damaged?)",
                    "restore it from a backup (keys made with it stop working otherwise)")
    if not problems:
        report.ok("secret", f"{path} (mode {mode:04o}, {length} characters)")


def _tls(settings: Settings, report: Report) -> None:
    cert, key = settings.ssl_certfile, settings.ssl_keyfile
    if cert is None and key is None:
        report.ok("tls", "off: plain HTTP (terminate TLS in a proxy such as nginx for remote clients)")
        return
    if cert is None or key is None:
        report.fail("tls", "ssl_certfile and ssl_keyfile must be set together", "set both, or neither")
        return
    readable = True
    for what, path in (("ssl_certfile", cert), ("ssl_keyfile", key)):
        try:
            Path(path).read_bytes()
        except OSError as exc:
            readable = False
            report.fail("tls", f"{what} {path} cannot be read ({exc.strerror})",
                        f"fix the path or its permissions (the server's user must read {path})")
    if not readable:
        return
    if _mode(Path(key)) & 0o077:
        report.fail("tls", f"ssl_keyfile {key} has mode {_mode(Path(key)):04o}", f"chmod 600 {key}")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(str(cert), str(key))
    except ssl.SSLError as exc:
        report.fail("tls", f"{cert} and {key} are not a matching PEM certificate and key ({exc.reason})",
                    "use the certificate (full chain) and its private key, both PEM")
        return
    report.ok("tls", f"HTTPS with {cert}")


# ---------------------------------------------------------------- network
def _bind(settings: Settings, report: Report) -> None:
    where = f"{settings.host}:{settings.port}"
    if settings.is_loopback:
        report.ok("bind", f"{where} (loopback only)" + ("" if settings.auth else ", authentication off"))
    elif not settings.auth:
        report.fail("bind", f"authentication is off and host is {settings.host}: anyone who can reach it "
                    "could use every model (serve refuses to start)",
                    "bind 127.0.0.1 behind a proxy, or turn auth back on and use API keys")
    else:
        report.ok("bind", f"{where} reachable from the network; API keys required")


def _port(settings: Settings, report: Report) -> None:
    where = f"{settings.host}:{settings.port}"
    if settings.port == 0:
        report.ok("port", "0: any free port")
        return
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            settings.host, settings.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        report.fail("port", f"cannot resolve host {settings.host!r} ({exc.strerror})", "use an IP address")
        return
    running = live_server_pid(settings)
    try:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE and running is not None:
            report.ok("port", f"{where} is in use by the running switchyard (pid {running})")
        elif exc.errno == errno.EADDRINUSE:
            report.fail("port", f"{where} is already in use by another program",
                        "stop that program, or choose another port (port: in the config, --port)")
        elif exc.errno == errno.EADDRNOTAVAIL:
            report.fail("port", f"{settings.host} is not an address of this machine",
                        "bind 127.0.0.1, 0.0.0.0 or one of this machine's addresses")
        elif exc.errno == errno.EACCES:
            report.fail("port", f"{where}: binding ports below 1024 needs privileges",
                        "use a port such as 8080 behind nginx")
        else:
            report.fail("port", f"{where}: cannot bind ({exc.strerror})", "choose another host or port")
        return
    note = f"; stale pid file {settings.pid_file} (harmless)" if settings.pid_file.exists() else ""
    report.ok("port", f"{where} is free{note}")


async def _upstreams(table: RoutingTable, report: Report) -> None:
    from switchyard.errors import GatewayError
    from switchyard.providers import load_provider

    async def probe(name: str) -> tuple[str, str | None, int]:
        provider = load_provider(table.upstreams[name])
        try:
            models = await asyncio.wait_for(provider.list_models(), UPSTREAM_TIMEOUT_S)
            return name, None, len(models)
        except GatewayError as exc:
            return name, exc.message, 0
        except TimeoutError:
            return name, f"no answer within {UPSTREAM_TIMEOUT_S:g}s", 0
        finally:
            await provider.aclose()

    remote = [name for name, spec in table.upstreams.items() if spec.type != LOCAL]  # local: checked apart
    for name, error, count in await asyncio.gather(*(probe(n) for n in remote)):
        spec = table.upstreams[name]
        url = display_url(spec.base_url)
        if error is None:
            report.ok("upstream", f"{name} ({spec.type}, {url}): reachable, {count} models")
        else:
            path = "/api/tags" if spec.type == "ollama" else "/models"
            report.fail("upstream", f"{name} ({spec.type}, {url}): {error} (GET {path})",
                        "start it, or correct base_url (and its credential)")


# ---------------------------------------------------------------- store and clock
async def _store(settings: Settings, report: Report) -> int | None:
    """Check the store; return how many models are stored over /admin/models (None: unknown)."""
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    from switchyard.store import HEAD_REVISION, Database, current_revision, sqlite_path
    from switchyard.store.models import SqlModelStore

    url = settings.resolved_database_url
    shown = make_url(url).render_as_string(hide_password=True)
    path = sqlite_path(url)
    if path is not None and not path.exists():
        report.ok("store", f"{path} does not exist yet; serve creates it")
        return 0
    database = Database.create(url)
    stored: int | None = None
    try:
        revision = await asyncio.wait_for(current_revision(database.engine), STORE_TIMEOUT_S)
        if revision == HEAD_REVISION:
            listed = await asyncio.wait_for(SqlModelStore(database.engine).list(), STORE_TIMEOUT_S)
            stored = sum(1 for m in listed if m.active)
        db_now: datetime | None = None
        skew = 0.0
        if database.backend == "postgresql":
            async with database.engine.connect() as conn:
                before = time.time()
                value = (await conn.execute(sa.text("SELECT now()"))).scalar_one()
                after = time.time()
            db_now = value if isinstance(value, datetime) else None
            if db_now is not None:
                skew = db_now.timestamp() - (before + after) / 2
    except Exception as exc:
        report.fail("store", f"cannot use {shown}: {type(exc).__name__}: {exc}".splitlines()[0][:300],
                    "check database_url, that the database server is up, and its credentials")
        return None
    finally:
        await database.dispose()
    if revision == HEAD_REVISION:
        report.ok("store", f"{shown}: reachable, schema at revision {revision} (head)")
    elif revision is None:
        stored = 0
        report.ok("store", f"{shown}: reachable, empty; serve creates the schema (or: switchyard db upgrade)")
    elif revision < HEAD_REVISION:
        report.fail("store", f"{shown}: schema at revision {revision}, this switchyard needs {HEAD_REVISION}",
                    "switchyard db upgrade (serve also upgrades at start)")
    else:
        report.fail("store", f"{shown}: schema at revision {revision}, newer than this switchyard "
                    f"({HEAD_REVISION})", "upgrade switchyard on this machine to the version that wrote it")
    if db_now is not None:
        if abs(skew) > CLOCK_SKEW_LIMIT_S:
            report.fail("clock", f"this machine's clock is {skew:+.1f}s off the database server's",
                        "run NTP (systemd-timesyncd, chrony) on both machines; key expiry and usage times use it")
        else:
            report.ok("clock", f"within {abs(skew):.1f}s of the database server's")
    return stored


def _clock(report: Report) -> None:
    now = datetime.now(UTC)
    installed = datetime.fromtimestamp(Path(switchyard.__file__).stat().st_mtime, UTC)
    floor = max(CLOCK_FLOOR, installed)
    if (floor - now).total_seconds() > 86400:
        report.fail("clock", f"the system clock says {now:%Y-%m-%d %H:%M} UTC, before this switchyard was "
                    f"installed ({floor:%Y-%m-%d})", "set the clock and run NTP (systemd-timesyncd, chrony)")
    else:
        report.ok("clock", f"system clock {now:%Y-%m-%d %H:%M:%S} UTC")


@click.command()
@store_options
def doctor(config_file: Path | None, data_dir: Path | None, database_url: str | None) -> None:
    """Check the installation: config, credentials, data dir, secret, store, clock, models
    (local models' files, engines and memory budget), upstreams, TLS, bind address and port.
    Prints one line per check (ok, WARN or FAIL, and what to do).

    Run it as the user, with the environment, that the server runs with. Exit status: 0 when
    every check passes (with or without warnings), 1 when any fails.
    """
    report = Report()
    settings = _load(config_file, {"data_dir": data_dir, "database_url": database_url}, report)
    if settings is not None:
        routable = _credentials(settings, report)
        table = _routing(routable, report)
        _bind(settings, report)
        _tls(settings, report)
        _data_dir(settings, report)
        _secret(settings, report)
        _clock(report)

        async def network() -> int | None:
            stored = await _store(settings, report)
            if table is not None:
                await _upstreams(table, report)
            return stored

        stored = asyncio.run(network())
        if table is not None:
            check_local_models(settings, table, report)
        check_models_configured(table, stored, report)
        _port(settings, report)
    else:
        _clock(report)
    warned = f", {report.warnings} warning{'s' if report.warnings != 1 else ''}" if report.warnings else ""
    if report.problems:
        click.echo(f"\n{report.problems} problem{'s' if report.problems != 1 else ''} found{warned}", err=True)
        raise SystemExit(1)
    click.echo(f"\nall checks passed{warned}", err=True)
