"""The closed error hierarchy of the gateway.

Every failure the gateway reports to a client is one of these. Providers map upstream
status codes to them; ``switchyard.http.errors`` renders any of them as an OpenAI error body
(``{"error": {"message", "type", "param", "code"}}``) or, once a stream has started, as a
final ``data: {"error": ...}`` SSE event. Anything else is a bug and becomes a logged 500.

    GatewayError
    ├── BadRequestError              400 invalid_request_error
    │   └── RequestTooLargeError     413 invalid_request_error
    ├── AuthenticationError          401 invalid_request_error (one constant body)
    ├── PermissionDeniedError        403 permission_error
    ├── NotFoundError                404 invalid_request_error
    │   └── ModelNotFoundError       404 model_not_found
    ├── RateLimitError               429 rate_limit_exceeded (+ Retry-After, x-ratelimit-*)
    │   └── InsufficientQuotaError   429 insufficient_quota (+ x-should-retry: false)
    ├── ServiceUnavailableError      503 service_unavailable (+ Retry-After)
    └── UpstreamError                502 upstream_error
        ├── UpstreamConnectionError  502 upstream_connection_error
        ├── UpstreamTimeoutError     504 upstream_timeout
        └── UpstreamRateLimitError   429 upstream rate limited (+ Retry-After)
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "BadRequestError",
    "GatewayError",
    "ModelNotFoundError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "RequestTooLargeError",
    "ServiceUnavailableError",
    "UpstreamConnectionError",
    "UpstreamError",
    "UpstreamRateLimitError",
    "UpstreamTimeoutError",
]


class GatewayError(Exception):
    """Base of every error the gateway renders to a client."""

    status_code: int = 500
    error_type: str = "server_error"
    default_code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.retry_after = retry_after
        self.headers: dict[str, str] = {}  # extra response headers (x-ratelimit-*, x-should-retry)

    def to_dict(self) -> dict[str, object]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class BadRequestError(GatewayError):
    status_code = 400
    error_type = "invalid_request_error"


class RequestTooLargeError(BadRequestError):
    status_code = 413
    default_code = "request_too_large"


class AuthenticationError(GatewayError):
    status_code = 401
    error_type = "invalid_request_error"
    default_code = "invalid_api_key"

    def __init__(self) -> None:
        # One constant body, whatever was wrong with the key: nothing to probe.
        super().__init__("Invalid or missing API key.")


class PermissionDeniedError(GatewayError):
    status_code = 403
    error_type = "permission_error"
    default_code = "permission_denied"


class NotFoundError(GatewayError):
    status_code = 404
    error_type = "invalid_request_error"
    default_code = "not_found"


class ModelNotFoundError(NotFoundError):
    default_code = "model_not_found"

    def __init__(self, model: str) -> None:
        super().__init__(
            f"The model '{model}' does not exist or you do not have access to it.", param="model"
        )


class RateLimitError(GatewayError):
    status_code = 429
    error_type = "rate_limit_error"
    default_code = "rate_limit_exceeded"


class InsufficientQuotaError(RateLimitError):
    """A budget is spent. Not worth retrying: ``x-should-retry: false`` tells the SDKs so."""

    error_type = "insufficient_quota"
    default_code = "insufficient_quota"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message, param=param, code=code)
        self.headers["x-should-retry"] = "false"


class ServiceUnavailableError(GatewayError):
    status_code = 503
    error_type = "server_error"
    default_code = "service_unavailable"


class UpstreamError(GatewayError):
    status_code = 502
    error_type = "upstream_error"
    default_code = "upstream_error"


class UpstreamConnectionError(UpstreamError):
    default_code = "upstream_connection_error"


class UpstreamTimeoutError(UpstreamError):
    status_code = 504
    default_code = "upstream_timeout"


class UpstreamRateLimitError(UpstreamError):
    status_code = 429
    error_type = "rate_limit_error"
    default_code = "upstream_rate_limited"
