"""The one exception tree. `api/errors.py` maps it to HTTP in one table."""

from __future__ import annotations

from datetime import datetime
from typing import Any


class ChatdError(Exception):
    """Base of every error chatd raises on purpose."""

    code: str = "error"

    def __init__(self, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


class InvalidInput(ChatdError):
    code = "invalid_input"


class Unauthenticated(ChatdError):
    code = "unauthenticated"


class Forbidden(ChatdError):
    code = "forbidden"


class NotFound(ChatdError):
    code = "not_found"


class Conflict(ChatdError):
    code = "conflict"


class QueueFull(Conflict):
    code = "queue_full"


class ChatBusy(Conflict):
    code = "chat_busy"


class DuplicateSlug(Conflict):
    code = "duplicate"


class UsageLimitExceeded(Conflict):
    code = "usage_limit_exceeded"

    def __init__(self, limit_micros: int, spent_micros: int, period_end: datetime) -> None:
        super().__init__(
            f"Usage limit exceeded: spent ${spent_micros / 1e6:.2f} of ${limit_micros / 1e6:.2f}, "
            f"resets at {period_end.isoformat()}.",
            {
                "limit_micros": limit_micros,
                "spent_micros": spent_micros,
                "period_end": period_end.isoformat(),
            },
        )
        self.limit_micros = limit_micros
        self.spent_micros = spent_micros
        self.period_end = period_end


class PayloadTooLarge(ChatdError):
    code = "payload_too_large"


class Upstream(ChatdError):
    """A server chatd talks to on the caller's behalf (an OAuth authorization server, an MCP
    server) failed or refused; the request itself was fine."""

    code = "upstream_failed"


class Unavailable(ChatdError):
    """A dependency (database, provider) is not reachable right now."""

    code = "unavailable"


class DatabaseUnavailable(Unavailable):
    """The database connection was lost or could not be made (`store.database.is_connection_error`).
    A turn that meets it gives its chat back instead of failing it."""


class CannotListen(ChatdError):
    """`chatd serve` cannot listen on its address (the port is taken, not allowed, unknown host).
    Raised before anything starts; the CLI prints the message, never the API."""

    code = "cannot_listen"


class SecretKeyMismatch(ChatdError):
    """The secret key is not the one this database's secrets were sealed with (a replica started
    with another key). Raised at start; the CLI prints the message, never the API."""

    code = "secret_key_mismatch"
