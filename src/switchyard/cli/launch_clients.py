"""What ``switchyard launch`` runs for each coding agent: its command line, its environment and
the temporary config files it reads, pointed at one Switchyard model with one key (pure).

The key never lands in a file: Claude Code and aider take it from their usual environment
variables, Codex and opencode from ``SWITCHYARD_API_KEY``, which their config names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CLIENTS", "KEY_ENV", "Client", "Plan", "plan_for"]

KEY_ENV = "SWITCHYARD_API_KEY"  # where Codex and opencode read the key (their config names it)
PROVIDER = "switchyard"  # the provider's name in Codex's and opencode's config


@dataclass(frozen=True, slots=True)
class Client:
    name: str  # as typed: switchyard launch NAME
    title: str
    binary: str
    install: str  # the command that installs it


CLIENTS: dict[str, Client] = {c.name: c for c in (
    Client("claude", "Claude Code", "claude", "npm install -g @anthropic-ai/claude-code"),
    Client("codex", "Codex CLI", "codex", "npm install -g @openai/codex"),
    Client("opencode", "opencode", "opencode", "npm install -g opencode-ai"),
    Client("aider", "aider", "aider", "python -m pip install aider-install && aider-install"),
)}


@dataclass(frozen=True, slots=True)
class Plan:
    """One client's launch: run ``argv`` with the inherited environment, ``unset`` removed and
    ``env`` set, after writing ``files`` (absolute path -> text, mode 0600)."""

    argv: list[str]
    env: dict[str, str]
    unset: tuple[str, ...] = ()
    files: dict[Path, str] = field(default_factory=dict)
    secret_vars: tuple[str, ...] = ()  # the variables of ``env`` that hold the key


def _toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def _claude(url: str, alias: str, key: str, args: list[str], context: int | None) -> Plan:
    env = {
        "ANTHROPIC_BASE_URL": url,  # Claude Code adds /v1/messages itself
        "ANTHROPIC_AUTH_TOKEN": key,  # sent as a bearer token; no "use this API key?" prompt
        "ANTHROPIC_MODEL": alias,
        # every model Claude Code picks on its own (background calls, subagents, /model's
        # shortcuts) is the same alias: the key may use only that one
        "ANTHROPIC_DEFAULT_OPUS_MODEL": alias,
        "ANTHROPIC_DEFAULT_SONNET_MODEL": alias,
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": alias,
        "ANTHROPIC_SMALL_FAST_MODEL": alias,
        "CLAUDE_CODE_SUBAGENT_MODEL": alias,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",  # no telemetry, error reports or update checks
    }
    if context:  # Claude Code knows only its own models' windows; it compacts by this one
        env["CLAUDE_CODE_MAX_CONTEXT_TOKENS"] = str(context)
    # an Anthropic key in the user's environment would compete with the gateway's key
    return Plan(["claude", *args], env, unset=("ANTHROPIC_API_KEY",), secret_vars=("ANTHROPIC_AUTH_TOKEN",))


def _codex(url: str, alias: str, key: str, args: list[str]) -> Plan:
    provider = (f"{{ name = \"Switchyard\", base_url = {_toml_string(url + '/v1')}, env_key = \"{KEY_ENV}\", "
                "wire_api = \"responses\" }")
    overrides = [f"model={_toml_string(alias)}", f"model_provider=\"{PROVIDER}\"",
                 f"model_providers.{PROVIDER}={provider}"]
    argv = ["codex"]
    for override in overrides:  # on top of the user's own config.toml, which stays as it is
        argv += ["-c", override]
    return Plan([*argv, *args], {KEY_ENV: key}, secret_vars=(KEY_ENV,))


def _opencode(url: str, alias: str, key: str, args: list[str], config_dir: Path) -> Plan:
    config: dict[str, Any] = {
        "$schema": "https://opencode.ai/config.json",
        "provider": {PROVIDER: {
            "npm": "@ai-sdk/openai-compatible",
            "name": "Switchyard",
            "options": {"baseURL": url + "/v1", "apiKey": "{env:" + KEY_ENV + "}"},
            "models": {alias: {"name": alias}},
        }},
        "model": f"{PROVIDER}/{alias}",
        "small_model": f"{PROVIDER}/{alias}",
    }
    path = config_dir / "opencode.json"
    return Plan(["opencode", *args], {"OPENCODE_CONFIG": str(path), KEY_ENV: key},
                files={path: json.dumps(config, indent=2) + "\n"}, secret_vars=(KEY_ENV,))


def _aider(url: str, alias: str, key: str, args: list[str], config_dir: Path, context: int | None) -> Plan:
    model = f"openai/{alias}"
    argv = ["aider", "--model", model, "--weak-model", model, "--editor-model", model,
            "--no-analytics", "--no-check-update", "--no-show-model-warnings"]
    files: dict[Path, str] = {}
    if context:  # aider knows the model's context window instead of guessing
        path = config_dir / "model-metadata.json"
        files[path] = json.dumps({model: {"max_input_tokens": context, "max_tokens": context,
                                          "litellm_provider": "openai", "mode": "chat"}}, indent=2) + "\n"
        argv += ["--model-metadata-file", str(path)]
    env = {"OPENAI_API_BASE": url + "/v1", "OPENAI_API_KEY": key,
           "LITELLM_LOCAL_MODEL_COST_MAP": "True"}  # litellm does not fetch its price list at start
    return Plan([*argv, *args], env, files=files, secret_vars=("OPENAI_API_KEY",))


def plan_for(client: str, url: str, alias: str, key: str, args: list[str], config_dir: Path,
             context: int | None = None) -> Plan:
    """The launch of ``client`` on ``alias`` at the server ``url`` (no trailing /v1) with ``key``;
    ``args`` go to the client after ours; ``config_dir`` is where its temporary files go."""
    if client == "claude":
        return _claude(url, alias, key, args, context)
    if client == "codex":
        return _codex(url, alias, key, args)
    if client == "opencode":
        return _opencode(url, alias, key, args, config_dir)
    if client == "aider":
        return _aider(url, alias, key, args, config_dir, context)
    raise ValueError(f"unknown client {client!r}")
