"""Reading the sources into a Settings (flags, environment, .env, the YAML file, defaults), and
errors that name the file's line and field."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    ValidationError,
)
from pydantic_settings import SettingsConfigDict

from switchyard.settings.models import PROVIDER_TYPES, ConfigError, ModelConfig, ProviderConfig
from switchyard.settings.server import Settings

__all__ = ["Sources", "load_settings", "model_problems", "read_sources", "validate"]


def _line_of(text: str, loc: tuple[int | str, ...]) -> int | None:
    """The 1-based line of the YAML node at ``loc`` (or its nearest ancestor)."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = None if node is None else node.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = [v for k, v in node.value if k.value == part]
            if not match:
                key = [k for k, _ in node.value if k.value == part]
                return key[0].start_mark.line + 1 if key else line
            node = match[0]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            break
        line = node.start_mark.line + 1
    return line


def _read_yaml(path: Path) -> tuple[dict[str, Any], str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "?"
        raise ConfigError(f"{path}: {where}: invalid YAML: {getattr(exc, 'problem', exc)}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: line 1: the top level must be a mapping")
    return data, text


def _format_errors(exc: ValidationError, path: Path | None, text: str | None) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        field = ".".join(str(p) for p in loc) or "(root)"
        where = ""
        if path is not None and text is not None:
            line = _line_of(text, loc)
            if line is not None:
                where = f"{path}: line {line}: "
        lines.append(f"{where}{field}: {err['msg']}")
    return "\n".join(lines)


class _EnvSettings(Settings):
    """Reads only the environment and ``.env``. A ``.env`` often holds other tools' variables
    (Docker Compose's, say), so keys that are not ours are ignored there; the YAML file and
    flags are still validated strictly by Settings itself."""

    model_config = SettingsConfigDict(extra="ignore")


@dataclass(frozen=True)
class Sources:
    """The raw values Settings are built from: YAML < .env < environment < overrides, merged."""

    values: dict[str, Any]
    path: Path | None = None
    text: str | None = None  # the YAML file's text, for line numbers in errors


def read_sources(config_file: Path | str | None = None, *, read_file: bool = True, **overrides: Any) -> Sources:
    """Merge every source without validating the result (``validate`` does that).

    ``read_file=False`` leaves the YAML file out, for callers that must work while it is broken.
    """
    overrides = {k: v for k, v in overrides.items() if v is not None}
    try:
        from_env = _EnvSettings()
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, None, None)) from exc
    path = Path(config_file) if config_file is not None else from_env.config_file
    data: dict[str, Any] = {}
    text = None
    if path is not None and read_file:
        data, text = _read_yaml(path)
        data["config_file"] = path
    merged = {**data, **from_env.model_dump(include=from_env.model_fields_set), **overrides}
    return Sources(merged, path if read_file else None, text)


def validate(values: dict[str, Any]) -> Settings:
    """Strict Settings from merged values. The .env file's values are already among them, so
    it is not read again (it may hold other tools' variables)."""
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]  # pydantic-settings init option


def load_settings(config_file: Path | str | None = None, **overrides: Any) -> Settings:
    """Build Settings from defaults < YAML file < .env < environment < overrides (CLI flags)."""
    sources = read_sources(config_file, **overrides)
    try:
        settings = validate(sources.values)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, sources.path, sources.text)) from exc
    _check_references(settings, sources.path, sources.text)
    return settings


def model_problems(
    models: list[ModelConfig], providers: dict[str, ProviderConfig], local_aliases: tuple[str, ...] = ()
) -> list[tuple[tuple[int | str, ...], str]]:
    """Cross-references between models and providers: (location under 'models', problem)."""
    problems: list[tuple[tuple[int | str, ...], str]] = []
    aliases = {m.alias for m in models} | set(local_aliases)
    seen: set[str] = set()

    def provider_problem(loc: tuple[int | str, ...], provider: str, base_url: str | None) -> None:
        if provider not in providers:
            if provider not in PROVIDER_TYPES:
                problems.append(((*loc, "provider"), f"unknown provider '{provider}'"))
            elif base_url is None:
                problems.append((loc, "base_url is required when provider is a type"))

    for i, model in enumerate(models):
        if model.alias in seen:
            problems.append(((i, "alias"), f"duplicate alias '{model.alias}'"))
        seen.add(model.alias)
        if model.deployments:
            if model.provider is not None:
                problems.append(((i, "provider"), "give either provider or deployments, not both"))
            for j, dep in enumerate(model.deployments):
                provider_problem((i, "deployments", j), dep.provider, dep.base_url)
        elif model.provider is None:
            problems.append(((i,), "provider (or deployments) is required"))
        else:
            provider_problem((i,), model.provider, model.base_url)
        for field in ("fallbacks", "context_window_fallbacks"):
            for j, name in enumerate(getattr(model, field)):
                if name not in aliases or name == model.alias:
                    problems.append(((i, field, j), f"'{name}' is not another configured alias"))
    return problems


def _check_references(settings: Settings, path: Path | None, text: str | None) -> None:
    local = tuple(m.alias for m in settings.local_models)
    problems = [(("models", *loc), msg)
                for loc, msg in model_problems(settings.models, settings.providers, local)]
    model_aliases = {m.alias for m in settings.models}
    seen: set[str] = set()
    for i, lm in enumerate(settings.local_models):
        if lm.alias in model_aliases or lm.alias in seen:
            problems.append((("local_models", i, "alias"), f"duplicate alias '{lm.alias}'"))
        seen.add(lm.alias)
        source = Path(lm.model).expanduser()
        path_like = lm.model.startswith(("/", ".", "~")) or lm.engine == "llamacpp"
        if path_like and not source.exists():
            wanted = "a GGUF file" if lm.engine == "llamacpp" else "a model directory or a Hugging Face id"
            problems.append((("local_models", i, "model"), f"{lm.model}: no such file ({wanted})"))
    if settings.local_models and "local" in settings.providers:
        problems.append((("providers", "local"), "the provider name 'local' is reserved for local_models"))
    if settings.default_provider and settings.default_provider not in settings.providers:
        problems.append((("default_provider",), f"unknown provider '{settings.default_provider}'"))
    if problems:
        out = []
        for loc, msg in problems:
            line = _line_of(text, loc) if text is not None else None
            prefix = f"{path}: line {line}: " if line is not None else ""
            out.append(f"{prefix}{'.'.join(map(str, loc))}: {msg}")
        raise ConfigError("\n".join(out))
