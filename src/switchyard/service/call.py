"""What one request carries through the pipeline: its context (shared with the HTTP edge) and
its outcome (filled in as it goes, read by accounting however it ends)."""

from __future__ import annotations

from dataclasses import dataclass

from switchyard.core.chat import ChatRequest
from switchyard.core.models import Target
from switchyard.core.usage import Usage

__all__ = ["CLIENT_CLOSED", "CallContext", "Outcome"]

CLIENT_CLOSED = 499  # nginx's code for "client closed the request"


@dataclass(slots=True)
class CallContext:
    """One request's identity and timings, shared with the HTTP edge.

    ``upstream_s`` is how long the response waited on the upstream before it could start
    (non-stream: the whole call; stream: until the first chunk). The edge subtracts it from
    the elapsed time to report the gateway's own overhead. ``deployment`` and ``attempts`` say
    which deployment served and how many were tried (response headers).
    """

    request_id: str
    upstream_s: float = 0.0
    model: str | None = None  # the alias the request was served as
    deployment: str | None = None
    provider: str | None = None  # the configured provider of that deployment
    attempts: int = 0
    headers: dict[str, str] | None = None  # x-ratelimit-* for the response
    endpoint: str | None = None  # the API the client called, for usage rows and metrics (else: the request's kind)
    session_id: str | None = None  # the client's agent session (X-Claude-Code-Session-Id, Codex's session-id)
    # only deployments of this configured provider may serve it: a Responses API chain relayed
    # natively goes to the upstream that holds its previous response (no other one knows that id)
    pinned_provider: str | None = None


@dataclass(slots=True)
class Outcome:
    """How a request (or one attempt of it) ended. Until something says otherwise, the client
    left (``CLIENT_CLOSED``): a cancellation sets nothing."""

    status: int = CLIENT_CLOSED
    usage: Usage | None = None
    events: int = 0  # content events relayed (a stream without a usage report is estimated from them)
    error: str | None = None
    target: Target | None = None  # the deployment that served (or was tried last)
    request: ChatRequest | None = None  # as governance lets it go (max_tokens within the budget)
