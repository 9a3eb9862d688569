"""Routing rules: exact alias, then provider/model prefix, then the default provider, else 404."""

from __future__ import annotations

import pytest

from switchyard.errors import ModelNotFoundError
from switchyard.service.routing import RoutingTable
from switchyard.settings import ConfigError, Settings


def table(**kwargs: object) -> RoutingTable:
    return RoutingTable(Settings.model_validate(kwargs))


PROVIDERS = {
    "ollama": {"type": "ollama", "base_url": "http://127.0.0.1:11434", "prefix_routing": True},
    "vllm": {"type": "openai", "base_url": "http://127.0.0.1:8000/v1", "timeout": 30, "max_concurrent": 8},
}


def test_exact_alias_wins_even_over_a_prefix() -> None:
    t = table(providers=PROVIDERS, models=[{"alias": "ollama/special", "provider": "vllm", "model": "x"}])
    target = t.resolve("ollama/special")
    assert (target.provider, target.upstream_model) == ("vllm", "x")


def test_prefix_routing_only_for_enabled_providers() -> None:
    t = table(providers=PROVIDERS)
    target = t.resolve("ollama/qwen2.5:3b")
    assert (target.provider, target.upstream_model, target.alias) == ("ollama", "qwen2.5:3b", "ollama/qwen2.5:3b")
    with pytest.raises(ModelNotFoundError):
        t.resolve("vllm/llama")  # prefix routing is off for vllm


def test_default_provider_takes_the_rest() -> None:
    t = table(providers=PROVIDERS, default_provider="vllm")
    target = t.resolve("anything")
    assert (target.provider, target.upstream_model, target.timeout, target.max_concurrent) == (
        "vllm", "anything", 30, 8)


def test_model_settings_override_the_provider() -> None:
    t = table(providers=PROVIDERS, models=[
        {"alias": "a", "provider": "vllm", "timeout": 5, "max_concurrent": 2},
        {"alias": "b", "provider": "vllm", "base_url": "http://other:9/v1"},
        {"alias": "c", "provider": "openai", "base_url": "http://third:9/v1"},
        {"alias": "off", "provider": "vllm", "enabled": False},
    ])
    a, b, c = t.resolve("a"), t.resolve("b"), t.resolve("c")
    assert (a.timeout, a.max_concurrent, a.upstream_model) == (5, 2, "a")
    assert t.upstreams[b.provider].base_url == "http://other:9/v1"
    assert t.upstreams[c.provider].type == "openai"
    assert [x.alias for x in t.listed()] == ["a", "b", "c"]
    with pytest.raises(ModelNotFoundError):
        t.resolve("off")


def test_disabled_provider_serves_nothing() -> None:
    t = table(providers={**PROVIDERS, "vllm": {**PROVIDERS["vllm"], "enabled": False}},
              models=[{"alias": "a", "provider": "vllm"}])
    with pytest.raises(ModelNotFoundError):
        t.resolve("a")
    assert "vllm" not in t.upstreams


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://user:pw@host:11434/v1", "http://host:11434/v1"),
        ("https://api.openai.com/v1", "https://api.openai.com/v1"),
        ("http://tok@10.0.0.2:8000", "http://10.0.0.2:8000"),
    ],
)
def test_display_url_drops_credentials(url: str, shown: str) -> None:
    from switchyard.service.routing import display_url

    assert display_url(url) == shown


def test_which_deployments_take_the_responses_api_as_it_is() -> None:
    """OpenAI itself and Azure OpenAI by default, an OpenAI-compatible server when configured so;
    ``responses: chat`` turns it off; a route relays only when every deployment and fallback does."""
    providers = {**PROVIDERS, "oai": {"type": "openai", "base_url": "https://api.openai.com/v1"},
                 "az": {"type": "azure", "base_url": "https://r.openai.azure.com"},
                 "ant": {"type": "anthropic", "base_url": "https://api.anthropic.com/v1"}}
    t = table(providers=providers, models=[
        {"alias": "gpt", "provider": "oai"}, {"alias": "gpt-chat", "provider": "oai",
                                              "capabilities": {"responses": "chat"}},
        {"alias": "az", "provider": "az"}, {"alias": "vllm", "provider": "vllm"},
        {"alias": "vllm-native", "provider": "vllm", "capabilities": {"responses": "native"}},
        {"alias": "mixed", "deployments": [{"provider": "oai"}, {"provider": "vllm"}]},
        {"alias": "falls-back", "provider": "oai", "fallbacks": ["vllm"]},
    ])
    native = {alias: t.responses_native(t.route(alias)) for alias in t.routes}
    assert native == {"gpt": True, "gpt-chat": False, "az": True, "vllm": False, "vllm-native": True,
                      "mixed": False, "falls-back": False}
    assert t.responses_native(t.route("ollama/qwen")) is False  # a prefix route: its provider type's default
    with pytest.raises(ConfigError, match="responses: native needs an openai or azure provider"):
        table(providers=providers, models=[{"alias": "c", "provider": "ant", "capabilities": {"responses": "native"}}])
    with pytest.raises(ConfigError, match=r"capabilities\.responses must be native or chat"):
        table(providers=providers, models=[{"alias": "c", "provider": "oai", "capabilities": {"responses": "yes"}}])
