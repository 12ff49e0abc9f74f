"""What crosses replicas about one chat's durable changes: a `Notification`, small enough for a
PostgreSQL NOTIFY payload, and its codec. Subscribers re-read the database on it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Notification:
    """What crosses replicas about one chat: ids and flags only (NOTIFY payload < 8000 bytes)."""

    after_message_id: int = 0
    full_refresh: bool = False
    status: str | None = None
    # The chat's generation when `status` was committed: orders status notifications that
    # arrive out of order (`domain.chat.status_version`); None from a sender that does not know.
    generation: int | None = None
    worker_id: str | None = None
    queue_update: bool = False
    retry: dict[str, Any] | None = None
    error: str | None = None
    # Human in the loop: the chat's pending actions changed (re-read them), and the (action id,
    # decision) of actions that no longer wait.
    actions: bool = False
    resolved: list[tuple[str, str]] = field(default_factory=list)

    def to_payload(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        if self.after_message_id:
            d["a"] = self.after_message_id
        if self.full_refresh:
            d["f"] = 1
        if self.status:
            d["s"] = self.status
        if self.generation is not None:
            d["g"] = self.generation
        if self.worker_id:
            d["w"] = self.worker_id
        if self.queue_update:
            d["q"] = 1
        if self.retry:
            d["r"] = self.retry
        if self.error:
            d["e"] = self.error[:2000]
        if self.actions:
            d["x"] = 1
        if self.resolved:
            # Bounded by the calls of one step; ~60 bytes each, far below NOTIFY's 8000.
            d["xr"] = [list(r) for r in self.resolved[:100]]
        return d

    @classmethod
    def from_payload(cls, d: dict[str, Any]) -> Notification:
        return cls(
            after_message_id=int(d.get("a", 0)),
            full_refresh=bool(d.get("f")),
            status=d.get("s"),
            generation=int(d["g"]) if d.get("g") is not None else None,
            worker_id=d.get("w"),
            queue_update=bool(d.get("q")),
            retry=d.get("r"),
            error=d.get("e"),
            actions=bool(d.get("x")),
            resolved=[(str(r[0]), str(r[1])) for r in d.get("xr") or []],
        )
