"""Relaying a chat's message parts between replicas.

Parts are transient and per token, so they never touch the database: the replica running a
chat serves its part buffer and live parts on an internal endpoint, and a replica with
subscribers to that chat follows it there. Each part carries a per-chat sequence number so a
reconnect resumes without loss or duplicates (`streams/parts.py` serves, `streams/mirror.py`
follows)."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal, cast

import httpx2

from chatd.domain.chat import Role
from chatd.domain.events import MessagePartEvent
from chatd.domain.parts import PART
from chatd.store import replicas
from chatd.store.database import Database

PARTS_PATH = "/internal/v1/chats/{chat_id}/parts"


def internal_token(secret: bytes) -> str:
    """The bearer token replicas use with each other: derived from the shared secret key."""
    return hmac.new(secret, b"chatd internal relay v1", hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class RelayItem:
    """One line of the relay: a numbered part, a `clear` (a step persisted or a retry: the parts
    up to `seq` are gone from the buffer), or the `end` of the turn."""

    kind: Literal["part", "clear", "end"]
    seq: int
    event: MessagePartEvent | None = None


def encode(item: RelayItem) -> str:
    d: dict[str, Any] = {"k": item.kind, "s": item.seq}
    if item.event is not None:
        # Internal fields (signatures) stay: the receiving replica strips them for its clients.
        d["r"] = item.event.role.value
        d["p"] = item.event.part.model_dump(mode="json", exclude_none=True)
    return json.dumps(d, separators=(",", ":")) + "\n"


def decode(chat_id: uuid.UUID, line: str) -> RelayItem:
    d = json.loads(line)
    ev = MessagePartEvent(chat_id=chat_id, role=Role(d["r"]), part=PART.validate_python(d["p"])) if "p" in d else None
    kind = str(d["k"])
    if kind not in ("part", "clear", "end"):
        raise ValueError(f"not a relay item: {kind!r}")
    return RelayItem(cast(Literal["part", "clear", "end"], kind), int(d["s"]), ev)


class RelayUnavailable(Exception):
    pass


class RelayClient:
    def __init__(self, db: Database, token: str, *, connect_timeout: float = 5.0) -> None:
        self.db = db
        self._token = token
        self._http = httpx2.AsyncClient(timeout=httpx2.Timeout(None, connect=connect_timeout))

    async def close(self) -> None:
        await self._http.aclose()

    async def follow(self, owner: uuid.UUID, chat_id: uuid.UUID) -> AsyncIterator[RelayItem]:
        address = await replicas.address_of(self.db, owner)
        if not address:
            raise RelayUnavailable(f"replica {owner} has no internal address")
        url = address.rstrip("/") + PARTS_PATH.format(chat_id=chat_id)
        async with self._http.stream("GET", url, headers={"Authorization": f"Bearer {self._token}"}) as resp:
            if resp.status_code != 200:
                raise RelayUnavailable(f"replica {owner} answered {resp.status_code}")
            async for line in resp.aiter_lines():
                if line.strip():
                    yield decode(chat_id, line)


__all__ = ["RelayClient", "RelayItem", "RelayUnavailable", "decode", "encode", "internal_token"]
