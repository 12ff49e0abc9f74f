"""What the workspace agent refuses: an `AgentError` becomes `{"error", "code"}` with an HTTP status."""

from __future__ import annotations


class AgentError(Exception):
    """A request the agent refuses; becomes `{"error", "code"}` with an HTTP status."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def bad(message: str, code: str = "invalid") -> AgentError:
    return AgentError(400, code, message)
