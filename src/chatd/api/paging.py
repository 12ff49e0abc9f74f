"""Cursor paging for every list endpoint: `?limit=&before=<cursor>`.

A list's body stays a bare JSON array (what clients read before paging existed); the cursor of
the next page travels in the `X-Next-Cursor` header, and as an RFC 8288 `Link: <…>; rel="next"`.
No header means this was the last page. A cursor is opaque to clients: base64url JSON of the sort
key of the last item returned, so a page never shifts when rows are added before it (keyset
paging, not offsets)."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from fastapi import Query, Request, Response

from chatd.errors import InvalidInput

T = TypeVar("T")

MAX_LIMIT = 1000
NEXT_CURSOR = "X-Next-Cursor"

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page.")]
Before = Annotated[
    str | None,
    Query(max_length=512, description="Where the previous page ended: its `X-Next-Cursor` response header."),
]

# How lists document the header in /openapi.json.
PAGED: dict[int | str, dict[str, Any]] = {
    200: {
        "headers": {
            NEXT_CURSOR: {
                "description": "The `before` value for the next page; absent on the last page.",
                "schema": {"type": "string"},
            },
            "Link": {"description": 'The next page as `<url>; rel="next"`; absent on the last page.', "schema": {"type": "string"}},
        }
    }
}

Key = tuple[str | int, ...]


def encode_cursor(key: Key) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key), separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None, shape: Sequence[type]) -> Key | None:
    """The key a cursor carries, checked against the list's key shape (`str`/`int` per part)."""
    if cursor is None:
        return None
    try:
        raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidInput("Invalid cursor: pass the X-Next-Cursor of the previous page.") from exc
    if not isinstance(raw, list) or len(raw) != len(shape) or not all(type(v) is t for v, t in zip(raw, shape, strict=True)):
        raise InvalidInput("Invalid cursor: pass the X-Next-Cursor of the previous page.")
    return tuple(raw)


def time_key(at: datetime) -> str:
    """Datetimes in cursors: ISO 8601 with microseconds, so they sort and parse back exactly."""
    return at.isoformat(timespec="microseconds")


def parse_time(value: str | int) -> datetime:
    """A cursor's time, aware and in UTC: the store refuses naive times (a crafted cursor must be a
    400, not a 500)."""
    try:
        at = datetime.fromisoformat(str(value))
        if at.tzinfo is None:
            raise ValueError("naive time")
        return at.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise InvalidInput("Invalid cursor: pass the X-Next-Cursor of the previous page.") from exc


def set_next(request: Request, response: Response, next_key: Key | None) -> None:
    if next_key is None:
        return
    cursor = encode_cursor(next_key)
    response.headers[NEXT_CURSOR] = cursor
    response.headers["Link"] = f'<{request.url.include_query_params(before=cursor)}>; rel="next"'


def page(
    items: Sequence[T], key: Callable[[T], Key], limit: int, before: Key | None, *, descending: bool = False
) -> tuple[list[T], Key | None]:
    """Page a short list held in memory (configuration rows, a user's workspaces): sorted by
    `key`, the items past `before`, at most `limit`, and the key to continue from."""
    ordered = sorted(items, key=key, reverse=descending)
    if before is not None:
        ordered = [i for i in ordered if (key(i) < before if descending else key(i) > before)]
    return fetched(ordered, key, limit)


def fetched(rows: Sequence[T], key: Callable[[T], Key], limit: int) -> tuple[list[T], Key | None]:
    """`rows` holds up to limit + 1 items in list order: one more than a page says whether
    another page follows."""
    out = list(rows[:limit])
    return out, (key(out[-1]) if len(rows) > limit and out else None)
