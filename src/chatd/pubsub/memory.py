"""In-process PubSub for a single replica (the SQLite default)."""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

from chatd.pubsub.base import Callback, Unsubscribe

log = logging.getLogger(__name__)


class MemoryPubSub:
    def __init__(self) -> None:
        self._subs: defaultdict[str, list[Callback]] = defaultdict(list)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._subs.clear()

    @property
    def healthy(self) -> bool:
        return True

    async def publish(self, channel: str, payload: dict[str, Any]) -> None:
        for cb in list(self._subs.get(channel, ())):
            try:
                cb(payload)
            except Exception:
                log.exception("pubsub subscriber failed on %s", channel)

    async def subscribe(self, channel: str, callback: Callback) -> Unsubscribe:
        self._subs[channel].append(callback)

        async def unsubscribe() -> None:
            subs = self._subs.get(channel)
            if subs and callback in subs:
                subs.remove(callback)
                if not subs:
                    del self._subs[channel]

        return unsubscribe
