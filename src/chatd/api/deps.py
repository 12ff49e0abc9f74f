"""Request dependencies: the composed application and the authenticated user."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request, WebSocket
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from chatd.domain.config import User
from chatd.errors import Forbidden, Unauthenticated
from chatd.service import ChatService

_bearer = HTTPBearer(auto_error=False, description="An API token: `Authorization: Bearer chatd_…`")


def _state(conn: Request | WebSocket) -> Any:
    return conn.app.state.chatd


def get_service(request: Request) -> ChatService:
    svc: ChatService = _state(request).service
    return svc


async def current_user(
    request: Request,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User:
    if creds is None or creds.scheme.lower() != "bearer" or not creds.credentials:
        raise Unauthenticated("Missing bearer token.")
    user = await get_service(request).authenticate(creds.credentials)
    if user is None:
        raise Unauthenticated("Invalid token.")
    return user


async def metrics_reader(
    request: Request,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """/metrics tells how busy the deployment is and which models it runs: an admin's token, unless
    the operator made it public for a scraper without credentials (CHATD_METRICS_PUBLIC)."""
    if _state(request).settings.metrics_public:
        return
    user = await current_user(request, creds)
    if not user.is_admin:
        raise Forbidden("Metrics need an admin's token.")


CurrentUser = Annotated[User, Depends(current_user)]
Service = Annotated[ChatService, Depends(get_service)]
