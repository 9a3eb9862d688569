"""Optional OpenTelemetry traces: one SERVER span per HTTP request, exported over OTLP/HTTP.

Turn it on with the extra and one setting::

    pip install 'switchyard[otel]'
    SWITCHYARD_OTEL_ENDPOINT=http://127.0.0.1:4318 switchyard serve     # or otel_endpoint: in the YAML

``otel_endpoint`` is the collector's OTLP/HTTP base URL (``/v1/traces`` is added unless it is
already there); ``otel_service_name`` (default ``switchyard``) becomes ``service.name``. The
exporter also honours the standard ``OTEL_EXPORTER_OTLP_TRACES_HEADERS`` / ``_TIMEOUT`` /
``_CERTIFICATE`` / ``_COMPRESSION`` variables, and the sampler ``OTEL_TRACES_SAMPLER``
(default: parent-based, always on). Spans are sent in batches from a background thread; stopping
the server sends what is still queued, after the usage flush (an unreachable collector can delay
exit by up to the export timeout, ``OTEL_EXPORTER_OTLP_TRACES_TIMEOUT``, default 10 s).

With the setting unset nothing here imports OpenTelemetry and the middleware is not installed, so
the request path does no tracing work at all. Set without the extra, the app refuses to start.

Each span is named ``METHOD /route/template`` (``POST /v1/chat/completions``; only ``METHOD`` for
paths no route matched) and continues an incoming W3C ``traceparent``. Attributes:
``http.request.method``, ``url.path``, ``url.scheme``, ``http.route``,
``http.response.status_code``, ``switchyard.request_id``, ``switchyard.key_id`` (the key's id,
never the key), ``switchyard.upstream_ms`` (time spent waiting on the upstream: the whole call,
or until a stream's first chunk) and ``switchyard.client_disconnected`` when the client left
before the response finished. 5xx responses and exceptions set the span status to ERROR with
``error.type`` (the status code or the exception's class name; never its message). Headers,
query strings, bodies, prompts and keys are never recorded. The span ends when the last body
chunk has been sent, or, for a stream the client left, when the app returns.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from switchyard import __version__

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Tracer
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = ["INSTALL_HINT", "Tracing", "TracingMiddleware", "TracingUnavailableError", "traces_url"]

INSTALL_HINT = "pip install 'switchyard[otel]'"
_TRACES_PATH = "/v1/traces"
_PROPAGATED = frozenset({b"traceparent", b"tracestate"})


class TracingUnavailableError(Exception):
    """``otel_endpoint`` is set but the OpenTelemetry packages cannot be imported."""


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL for a collector base URL (or a full ``…/v1/traces`` URL)."""
    base = endpoint.rstrip("/")
    return base if base.endswith(_TRACES_PATH) else base + _TRACES_PATH


class Tracing:
    """One app's tracer provider. Built in ``create_app`` (so a missing extra fails at once);
    ``start`` (lifespan start-up) adds the batching OTLP exporter and its thread, ``shutdown``
    (lifespan shutdown; it blocks, so run it in a thread) sends what is queued and stops.

    The provider is not installed as OpenTelemetry's global one: the app owns it.
    """

    def __init__(self, endpoint: str, service_name: str) -> None:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: F401
            from opentelemetry.sdk.resources import SERVICE_NAME, Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
        except ImportError as exc:
            missing = exc.name or "opentelemetry"
            raise TracingUnavailableError(
                f"otel_endpoint is set, but OpenTelemetry is not installed ({missing} is missing). "
                f"Install the extra: {INSTALL_HINT}; or unset otel_endpoint (SWITCHYARD_OTEL_ENDPOINT)."
            ) from exc
        self.url = traces_url(endpoint)
        self._provider: TracerProvider = TracerProvider(
            resource=Resource.create({SERVICE_NAME: service_name}), shutdown_on_exit=False
        )
        self.tracer: Tracer = self._provider.get_tracer("switchyard", __version__)
        self.propagator: TraceContextTextMapPropagator = TraceContextTextMapPropagator()

    def start(self) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        self._provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=self.url)))

    def shutdown(self) -> None:
        """Export the queued spans and stop the exporter thread. Blocks."""
        self._provider.shutdown()


class TracingMiddleware:
    """A SERVER span around each HTTP request; pure ASGI, so streams pass through untouched."""

    def __init__(self, app: ASGIApp, tracing: Tracing) -> None:
        from opentelemetry import context, trace

        self.app = app
        self._tracer = tracing.tracer
        self._propagator = tracing.propagator
        self._attach = context.attach
        self._detach = context.detach
        self._in_context = trace.set_span_in_context
        self._server = trace.SpanKind.SERVER
        self._error = trace.Status(trace.StatusCode.ERROR)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"] if k in _PROPAGATED}
        parent = self._propagator.extract(carrier) if carrier else None
        method: str = scope["method"]
        span = self._tracer.start_span(method, context=parent, kind=self._server)
        token = self._attach(self._in_context(span, parent))
        if not span.is_recording():  # sampled out: keep the context for children, skip the bookkeeping
            try:
                await self.app(scope, receive, send)
            finally:
                self._detach(token)
                span.end()
            return

        state = scope.setdefault("state", {})
        status = 0
        error_type: str | None = None
        ended = False

        def finish() -> None:
            nonlocal ended, error_type
            if ended:
                return
            ended = True
            attributes: dict[str, str | int | float] = {
                "http.request.method": method,
                "url.path": scope["path"],
                "url.scheme": scope.get("scheme", "http"),
            }
            route = getattr(scope.get("route"), "path", None)
            if isinstance(route, str):
                span.update_name(f"{method} {route}")
                attributes["http.route"] = route
            if status:
                attributes["http.response.status_code"] = status
                if status >= 500 and error_type is None:
                    error_type = str(status)
            for key, name in (("request_id", "switchyard.request_id"), ("key_id", "switchyard.key_id")):
                value = state.get(key)
                if isinstance(value, str):
                    attributes[name] = value
            model = getattr(state.get("call"), "model", None)
            if model:
                attributes["gen_ai.request.model"] = model
            upstream_s = getattr(state.get("call"), "upstream_s", None)
            if isinstance(upstream_s, float) and upstream_s > 0:
                attributes["switchyard.upstream_ms"] = round(upstream_s * 1000, 3)
            if error_type is not None:
                attributes["error.type"] = error_type
                span.set_status(self._error)
            span.set_attributes(attributes)
            span.end()

        async def receive_traced() -> Message:
            message = await receive()
            if message["type"] == "http.disconnect" and not ended:
                span.set_attribute("switchyard.client_disconnected", True)
            return message

        async def send_traced(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                finish()

        try:
            await self.app(scope, receive_traced, send_traced)
        except BaseException as exc:
            if not status and isinstance(exc, Exception):
                status = 500  # what Starlette's ServerErrorMiddleware, outside us, will send
            error_type = type(exc).__qualname__
            raise
        finally:
            self._detach(token)
            finish()
