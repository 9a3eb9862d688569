"""Provider registry: provider type -> ``"module:Class"``, imported only when first used.

Built-in providers are registered exactly like third-party ones would be, so a heavy
optional dependency is only imported by a configuration that uses it.
"""

from __future__ import annotations

from importlib import import_module
from typing import Protocol

from switchyard.core.models import UpstreamSpec
from switchyard.core.ports import Provider

__all__ = ["BUILTIN_PROVIDERS", "ProviderFactory", "load_provider"]

BUILTIN_PROVIDERS: dict[str, str] = {
    "openai": "switchyard.providers.openai.client:OpenAIProvider",
    "ollama": "switchyard.providers.ollama.client:OllamaProvider",
    "anthropic": "switchyard.providers.anthropic.client:AnthropicProvider",
    "gemini": "switchyard.providers.gemini.client:GeminiProvider",
    "azure": "switchyard.providers.azure.client:AzureOpenAIProvider",
}


class ProviderFactory(Protocol):
    def __call__(self, spec: UpstreamSpec) -> Provider: ...


def load_provider(spec: UpstreamSpec, registry: dict[str, str] | None = None) -> Provider:
    """Build the provider for ``spec`` from the registry (built-ins by default)."""
    target = (registry or BUILTIN_PROVIDERS)[spec.type]
    module_name, _, attr = target.partition(":")
    factory: ProviderFactory = getattr(import_module(module_name), attr)
    return factory(spec)
