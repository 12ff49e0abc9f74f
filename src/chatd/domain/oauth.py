"""What chatd keeps about OAuth2 authorization of MCP servers besides the user tokens: the
authorization server it found (and the client it registered there), and pending browser flows."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class OAuthClientRecord:
    """The authorization server of one MCP server as last discovered, and chatd's client there.

    Valid only for the `server_url` and `redirect_uri` it was made for: a changed config or
    public URL means discovering (and registering) again.
    """

    server_id: uuid.UUID
    server_url: str
    redirect_uri: str
    issuer: str | None
    authorization_endpoint: str | None
    token_endpoint: str
    resource: str | None
    client_id: str
    client_secret: str | None  # decrypted; a dynamically registered secret, never leaves the server
    auth_method: str
    dynamic: bool
    created_at: datetime


@dataclass(frozen=True, slots=True)
class PendingAuthorization:
    """A browser authorization started by a user and not yet called back (single use)."""

    state_hash: str  # sha256 of the state; the state itself is only in the browser's URL
    server_id: uuid.UUID
    user_id: uuid.UUID
    code_verifier: str  # decrypted PKCE verifier
    redirect_uri: str
    client_id: str
    auth_method: str
    token_endpoint: str
    resource: str | None
    created_at: datetime
    expires_at: datetime
