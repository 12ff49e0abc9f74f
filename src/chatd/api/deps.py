"""Request dependencies: the composed application, its settings and services, and the
authenticated user."""

from __future__ import annotations

import asyncio
from typing import Annotated, Protocol

from fastapi import Depends, Request, WebSocket
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from chatd.domain.config import User
from chatd.errors import Forbidden, Unauthenticated
from chatd.push_service import PushService
from chatd.service import ChatService
from chatd.settings import Settings

_bearer = HTTPBearer(auto_error=False, description="An API token: `Authorization: Bearer chatd_…`")


class AppState(Protocol):
    """What the API uses of the composed application (`bootstrap.App` is one): the API reaches
    the database, the streams and the pubsub only through these services."""

    @property
    def settings(self) -> Settings: ...

    @property
    def service(self) -> ChatService: ...

    @property
    def push(self) -> PushService: ...

    @property
    def closing(self) -> asyncio.Event:
        """Set when the process stops: long-lived streams end then."""
        ...

    @property
    def internal_token(self) -> str:
        """The bearer token replicas use with each other (the part relay)."""
        ...


def app_state(conn: Request | WebSocket) -> AppState:
    # Starlette types its state as Any; `create_app` is the one place that sets it.
    state: AppState = conn.app.state.chatd
    return state


def get_service(request: Request) -> ChatService:
    return app_state(request).service


def get_push(request: Request) -> PushService:
    return app_state(request).push


def get_closing(request: Request) -> asyncio.Event:
    return app_state(request).closing


def get_settings(request: Request) -> Settings:
    return app_state(request).settings


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
    if get_settings(request).metrics_public:
        return
    user = await current_user(request, creds)
    if not user.is_admin:
        raise Forbidden("Metrics need an admin's token.")


async def bearer_token(creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> str:
    """The raw token of an authenticated request (CurrentUser checked it): a long-lived stream
    re-checks it, so that revoking a token also ends the streams opened with it."""
    return creds.credentials if creds is not None else ""


CurrentUser = Annotated[User, Depends(current_user)]
BearerToken = Annotated[str, Depends(bearer_token)]
Service = Annotated[ChatService, Depends(get_service)]
Push = Annotated[PushService, Depends(get_push)]
AppSettings = Annotated[Settings, Depends(get_settings)]
Closing = Annotated[asyncio.Event, Depends(get_closing)]
