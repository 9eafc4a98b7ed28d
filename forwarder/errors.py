"""The forwarder's exceptions, in one tree.

    ForwarderError
    ├── ConfigError          a configuration key is missing or wrong
    ├── StateError           a checkpoint file cannot be read or written
    ├── ApiError             the Asana API answered with an error
    │   ├── ApiRetryable     timeouts, transport errors, 429, 5xx, malformed pages
    │   ├── ApiAccessDenied  401, 402, 403, 404, TLS verification: a person must act
    │   ├── OffsetRejected   400 on a request that carried an offset
    │   └── ApiBadRequest    400 on a request without an offset
    └── SinkError            a sink could not deliver a batch
        └── SinkAuthError    the receiver refused our credentials

Foreign exceptions (httpx, OSError, ssl) are translated into these at one
boundary and chained with ``from``.
"""

from __future__ import annotations


class ForwarderError(Exception):
    """Base of every error the forwarder raises on purpose."""


class ConfigError(ForwarderError):
    """Raised when the configuration is invalid; names the key and the problem."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        lines = [f"{key}: {problem}" for key, problem in problems]
        super().__init__("invalid configuration:\n  " + "\n  ".join(lines))


class StateError(ForwarderError):
    """Raised when a checkpoint file is unreadable, corrupt or cannot be saved."""

    def __init__(self, message: str, *, sink: str | None = None) -> None:
        super().__init__(message)
        self.sink = sink


class ApiError(ForwarderError):
    """Raised for an error answer from the Asana API."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.request_id = request_id
        self.retry_after = retry_after


class ApiRetryable(ApiError):
    """Raised when a request may succeed if repeated later."""


class ApiAccessDenied(ApiError):
    """Raised on 401, 402, 403 and 404 (the token, tier or workspace is wrong)
    and when the API's certificate fails verification."""


class OffsetRejected(ApiError):
    """Raised when the API refuses an offset we sent back (expired or invalid)."""


class ApiBadRequest(ApiError):
    """Raised on a 400 that is not about the offset, usually a bad filter."""


class SinkError(ForwarderError):
    """Raised by a sink when a batch could not be delivered and may be retried."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SinkAuthError(SinkError):
    """Raised when a receiver refuses the sink's credentials."""
