"""What crosses replicas about one chat's durable changes: a `Notification` (the stream changes of
one use case, `domain/changes.OnStream`), small enough for a PostgreSQL NOTIFY payload, and its
codec. Subscribers re-read the database on it.

The codec is generic: a change travels as `[tag, fields]`, its fields as pydantic dumps them, so a
new change needs no entry here. A tag this replica does not know (a newer replica's, during a
rolling upgrade) is skipped."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cache
from typing import Any, get_args

from pydantic import TypeAdapter, ValidationError

from chatd.domain.changes import Change, OnStream, StatusChanged

log = logging.getLogger(__name__)


@cache
def _by_tag() -> dict[str, type[OnStream]]:
    kinds: dict[str, type[OnStream]] = {}
    for kind in get_args(Change):
        if issubclass(kind, OnStream):
            assert kind.tag not in kinds, f"two stream changes are tagged {kind.tag!r}"
            kinds[kind.tag] = kind
    return kinds


_ADAPTERS: dict[type[OnStream], TypeAdapter[Any]] = {}


def _adapter(kind: type[OnStream]) -> TypeAdapter[Any]:
    adapter = _ADAPTERS.get(kind)
    if adapter is None:
        adapter = _ADAPTERS[kind] = TypeAdapter(kind)
    return adapter


@dataclass(frozen=True, slots=True)
class Notification:
    """The stream changes of one chat from one use case, in `rank` order."""

    changes: tuple[OnStream, ...] = ()

    @property
    def status(self) -> StatusChanged | None:
        return next((c for c in self.changes if isinstance(c, StatusChanged)), None)

    def to_payload(self) -> dict[str, Any]:
        return {"c": [[c.tag, _adapter(type(c)).dump_python(c, mode="json", exclude=set(c.local) or None)] for c in self.changes]}

    @classmethod
    def from_payload(cls, d: dict[str, Any]) -> Notification:
        kinds = _by_tag()
        changes: list[OnStream] = []
        for item in d.get("c") or []:
            try:
                tag, fields = item
                kind = kinds.get(tag)
                if kind is None:
                    continue
                changes.append(_adapter(kind).validate_python(fields))
            except (ValueError, TypeError, ValidationError):
                log.warning("skipping a malformed stream change in a notification")
        return cls(tuple(changes))
