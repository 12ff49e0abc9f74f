"""MCP failures, converted once here from SDK, transport and process errors."""

from __future__ import annotations

from chatd.errors import ChatdError


class McpError(ChatdError):
    code = "mcp_error"


class McpConnectError(McpError):
    """A server could not be connected, initialised or listed (network, timeout, protocol)."""

    code = "mcp_connect_failed"


class McpAuthError(McpConnectError):
    """The server answered 401/403: the token or key is missing, expired or wrong."""

    code = "mcp_unauthorized"

    def __init__(self, message: str, status: int = 401, required_scope: str | None = None) -> None:
        super().__init__(message, {"status": status})
        self.status = status
        # A 403 `insufficient_scope` challenge names the scopes the request needs (step-up).
        self.required_scope = required_scope


class McpCallError(McpError):
    """A tools/call failed below the tool: timeout, lost connection, protocol error."""

    code = "mcp_call_failed"


class McpSessionLost(McpCallError):
    """The server answered this request 404 to its session id: it restarted or expired the
    session. This request was not processed, so it is safe to send again on a new session (a
    call sent before the loss, on the same connection, gets a plain McpCallError)."""

    code = "mcp_session_lost"
