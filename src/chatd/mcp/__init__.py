"""The MCP client: per-turn connections to configured MCP servers (HTTP, SSE, stdio), tool
namespacing and filtering, auth headers and OAuth2 tokens, and conversion of MCP results into
chatd tool results."""

from chatd.mcp.apps import AppResourceError, AppView
from chatd.mcp.client import (
    DEFAULT_CALL_TIMEOUT,
    DEFAULT_CONNECT_TIMEOUT,
    AppToolRefused,
    McpConnections,
    McpTool,
    OnServerError,
    ToolInfo,
    call_app_tool,
    connect_all,
    list_tools_check,
    read_app_resource,
    read_app_view,
    system_prompt_section,
)
from chatd.mcp.config import OAuthToken, redact_url, validate_slug
from chatd.mcp.errors import McpAuthError, McpCallError, McpConnectError, McpError
from chatd.mcp.results import StoreFile

__all__ = [
    "DEFAULT_CALL_TIMEOUT",
    "DEFAULT_CONNECT_TIMEOUT",
    "AppResourceError",
    "AppToolRefused",
    "AppView",
    "McpAuthError",
    "McpCallError",
    "McpConnectError",
    "McpConnections",
    "McpError",
    "McpTool",
    "OAuthToken",
    "OnServerError",
    "StoreFile",
    "ToolInfo",
    "call_app_tool",
    "connect_all",
    "list_tools_check",
    "read_app_resource",
    "read_app_view",
    "redact_url",
    "system_prompt_section",
    "validate_slug",
]
