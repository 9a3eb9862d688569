"""The one typed Settings object: the only reader of the environment.

Sources, highest priority first: CLI flags (passed as overrides), ``SWITCHYARD_*`` environment
variables, a ``.env`` file, the YAML config file, then the defaults below. Nested fields use
``__`` in environment names (``SWITCHYARD_PROVIDERS__OLLAMA__BASE_URL``).
"""

from switchyard.settings.loading import Sources, load_settings, model_problems, read_sources, validate
from switchyard.settings.models import (
    ENV_REF,
    PROVIDER_TYPES,
    ConfigError,
    DeploymentConfig,
    LocalModelConfig,
    ModelConfig,
    ProviderConfig,
    RateLimitConfig,
    UpstreamURL,
    is_upstream_url,
)
from switchyard.settings.server import Settings
from switchyard.settings.workers import WorkerShare

__all__ = [
    "ENV_REF",
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
    "WorkerShare",
    "is_upstream_url",
    "load_settings",
    "model_problems",
    "read_sources",
    "validate",
]
