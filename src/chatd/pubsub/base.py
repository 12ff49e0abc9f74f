"""The PubSub contract and channel names."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

# Called on the event loop for each payload; must not block.
Callback = Callable[[dict[str, Any]], None]
Unsubscribe = Callable[[], Awaitable[None]]

# PostgreSQL NOTIFY payloads must stay under 8000 bytes; we keep ours to ids and flags.
MAX_PAYLOAD = 7000

PENDING_CHANNEL = "chatd_pending"
# A provider, model config, MCP server or user changed: replicas drop their cached copies.
CONFIG_CHANNEL = "chatd_config"
# An MCP server answered a check after failing: replicas retry it at once ({"reachable": id}).
MCP_CHANNEL = "chatd_mcp"


def chat_channel(chat_id: uuid.UUID) -> str:
    return f"chat_{chat_id.hex}"


def owner_channel(user_id: uuid.UUID) -> str:
    return f"owner_{user_id.hex}"


class PubSub(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def publish(self, channel: str, payload: dict[str, Any]) -> None: ...

    async def subscribe(self, channel: str, callback: Callback) -> Unsubscribe:
        """Deliver every later payload on `channel` to `callback` until unsubscribed.

        When this returns, the subscription is active: anything published afterwards is delivered.
        """
        ...

    @property
    def healthy(self) -> bool: ...
