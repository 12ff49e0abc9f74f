"""Stream events (SPEC §6) as they reach clients."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Literal

from chatd.domain.actions import PendingAction
from chatd.domain.chat import ChatStatus, Message, QueuedMessage, Role
from chatd.domain.parts import Part

EventType = Literal[
    "message_part", "message", "status", "queue_update", "retry", "error", "action_required", "action_resolved"
]


class Plain:
    """An event whose JSON is its own fields (`api/schemas.event_json` needs no entry for it):
    uuids and datetimes as strings, enums as values, None fields left out."""

    __slots__ = ()

    def fields_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):  # type: ignore[arg-type]
            if f.name in ("chat_id", "type"):
                continue
            v = getattr(self, f.name)
            if v is None:
                continue
            if isinstance(v, uuid.UUID):
                v = str(v)
            elif isinstance(v, datetime):
                v = v.isoformat()
            elif isinstance(v, enum.Enum):
                v = v.value
            out[f.name] = v
        return out


@dataclass(frozen=True, slots=True)
class MessagePartEvent:
    chat_id: uuid.UUID
    role: Role
    part: Part
    type: Literal["message_part"] = "message_part"


@dataclass(frozen=True, slots=True)
class MessageEvent:
    chat_id: uuid.UUID
    message: Message
    type: Literal["message"] = "message"


@dataclass(frozen=True, slots=True)
class StatusEvent:
    chat_id: uuid.UUID
    status: ChatStatus
    worker_id: uuid.UUID | None = None
    type: Literal["status"] = "status"


@dataclass(frozen=True, slots=True)
class QueueUpdateEvent:
    chat_id: uuid.UUID
    queued_messages: list[QueuedMessage]
    type: Literal["queue_update"] = "queue_update"


@dataclass(frozen=True, slots=True)
class RetryEvent(Plain):
    chat_id: uuid.UUID
    attempt: int
    delay_ms: int
    error: str
    retrying_at: datetime
    type: Literal["retry"] = "retry"


@dataclass(frozen=True, slots=True)
class ErrorEvent(Plain):
    chat_id: uuid.UUID
    message: str
    detail: dict[str, Any] | None = None
    type: Literal["error"] = "error"


@dataclass(frozen=True, slots=True)
class ActionRequiredEvent:
    """The chat waits for an answer to this action (human in the loop)."""

    chat_id: uuid.UUID
    action: PendingAction
    type: Literal["action_required"] = "action_required"


@dataclass(frozen=True, slots=True)
class ActionResolvedEvent(Plain):
    """An action was answered, timed out or cancelled; it no longer waits."""

    chat_id: uuid.UUID
    action_id: uuid.UUID
    decision: str
    type: Literal["action_resolved"] = "action_resolved"


StreamEvent = (
    MessagePartEvent | MessageEvent | StatusEvent | QueueUpdateEvent | RetryEvent | ErrorEvent | ActionRequiredEvent | ActionResolvedEvent
)
