"""Prometheus metrics, on a registry owned by the app (no module globals).

Names:
- ``switchyard_requests_total{model,provider,endpoint,status}``
- ``switchyard_request_duration_seconds{model,provider,endpoint,status}`` (histogram, whole request)
- ``switchyard_tokens_total{model,provider,type}`` (type: prompt | completion)
- ``switchyard_requests_in_flight{model}``
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "switchyard_requests",
            "Requests by model, provider, endpoint and HTTP status.",
            ["model", "provider", "endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "switchyard_request_duration_seconds",
            "Whole-request latency (streams: until the last byte).",
            ["model", "provider", "endpoint", "status"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter(
            "switchyard_tokens",
            "Tokens by model, provider and type (prompt, completion).",
            ["model", "provider", "type"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "switchyard_requests_in_flight", "Requests being served now.", ["model"], registry=self.registry
        )

    def observe(
        self, model: str, provider: str, endpoint: str, status: int, seconds: float, prompt: int, completion: int
    ) -> None:
        code = str(status)
        self.requests.labels(model, provider, endpoint, code).inc()
        self.latency.labels(model, provider, endpoint, code).observe(seconds)
        if prompt:
            self.tokens.labels(model, provider, "prompt").inc(prompt)
        if completion:
            self.tokens.labels(model, provider, "completion").inc(completion)

    def render(self) -> bytes:
        return generate_latest(self.registry)
