"""One outbox (issue 10, item 1): use cases name what changed (`domain/changes.py`), and only
`streams/outbox.py` turns that into channels and payloads, after the commit."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from chatd.api.schemas import event_json
from chatd.domain.changes import (
    ActionsRequested,
    ActionsResolved,
    ChatArchived,
    ChatCreated,
    ConfigChanged,
    HistoryReplaced,
    MessagesAdded,
    QueueChanged,
    RetryScheduled,
    StatusChanged,
    TitleChanged,
    TurnFailed,
    WorkAvailable,
)
from chatd.domain.chat import ChatStatus
from chatd.pubsub.base import CONFIG_CHANNEL, PENDING_CHANNEL, chat_channel, owner_channel
from chatd.streams.notes import Notification, _by_tag
from chatd.streams.outbox import WATCH_KINDS, Outbox, read_owner_hint

CHAT, OWNER = uuid.uuid4(), uuid.uuid4()
SRC = Path(__file__).parent.parent / "src" / "chatd"


class Recorder:
    """Stands in for the hub (its `notify`) and the pubsub: what was published, in order."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    async def notify(self, chat_id: uuid.UUID, note: Notification) -> None:
        self.sent.append((chat_channel(chat_id), note.to_payload()))

    async def publish(self, channel: str, payload: dict[str, Any]) -> None:
        self.sent.append((channel, payload))


@pytest.fixture
def sent() -> Recorder:
    return Recorder()


@pytest.fixture
def outbox(sent: Recorder) -> Outbox:
    return Outbox(sent, sent)  # type: ignore[arg-type]


def status(s: ChatStatus, generation: int = 3) -> StatusChanged:
    return StatusChanged(CHAT, OWNER, s, generation)


def notes(sent: Recorder) -> list[tuple[Any, ...]]:
    """The chat channel's notifications, decoded as another replica decodes them."""
    return [Notification.from_payload(json.loads(json.dumps(p))).changes for c, p in sent.sent if c == chat_channel(CHAT)]


async def test_a_send_is_one_notification_one_list_hint_and_one_wake_up(outbox: Outbox, sent: Recorder) -> None:
    action = str(uuid.uuid4())
    changes = [
        MessagesAdded(CHAT, 41), status(ChatStatus.PENDING), ActionsResolved(CHAT, ((action, "cancel"),)),
        QueueChanged(CHAT, OWNER),
    ]
    await outbox.publish([*changes, WorkAvailable()])
    assert [c for c, _ in sent.sent] == [chat_channel(CHAT), owner_channel(OWNER), PENDING_CHANNEL]
    assert notes(sent) == [tuple(changes)]
    assert sent.sent[1][1] == {"k": "status_change", "c": str(CHAT)}
    assert sent.sent[2][1] == {}


async def test_changes_a_subscriber_reads_in_another_order_travel_separately(outbox: Outbox, sent: Recorder) -> None:
    # The end of a turn: the error first, then the promoted message, a limit's error, the status.
    await outbox.publish([
        TurnFailed(CHAT, "boom"), MessagesAdded(CHAT, 9), TurnFailed(CHAT, "limit"), status(ChatStatus.PENDING),
        QueueChanged(CHAT, OWNER),
    ])
    assert notes(sent) == [
        (TurnFailed(CHAT, "boom"),), (MessagesAdded(CHAT, 9), TurnFailed(CHAT, "limit")),
        (status(ChatStatus.PENDING), QueueChanged(CHAT, OWNER)),
    ]


async def test_the_owner_hears_once_per_chat_with_the_most_telling_kind(outbox: Outbox, sent: Recorder) -> None:
    other = uuid.uuid4()
    await outbox.publish([
        status(ChatStatus.WAITING), ChatArchived(CHAT, OWNER), QueueChanged(other, OWNER), TitleChanged(other, OWNER),
        ChatCreated(uuid.uuid4(), OWNER),
    ])
    hints = [read_owner_hint(p) for c, p in sent.sent if c == owner_channel(OWNER)]
    assert [h[0] for h in hints if h] == ["deleted", "title_change", "created"]


def test_each_chat_list_change_names_its_watch_kind_and_no_other_change_names_one() -> None:
    other = uuid.uuid4()
    watched = (
        StatusChanged(CHAT, OWNER, ChatStatus.RUNNING, 1), QueueChanged(CHAT, OWNER), ChatCreated(CHAT, OWNER),
        ChatArchived(CHAT, OWNER), ChatArchived(CHAT, OWNER, archived=False), TitleChanged(other, OWNER),
    )
    hints = [c.owner_hint() for c in watched]
    assert hints == [
        (OWNER, CHAT, "status_change"), (OWNER, CHAT, "queue_change"), (OWNER, CHAT, "created"), (OWNER, CHAT, "deleted"),
        (OWNER, CHAT, "created"), (OWNER, other, "title_change"),
    ]
    assert {h[2] for h in hints if h} == set(WATCH_KINDS)
    quiet = (MessagesAdded(CHAT, 1), HistoryReplaced(CHAT), ActionsRequested(CHAT), TurnFailed(CHAT, "x"), WorkAvailable(), ConfigChanged())
    assert [c.owner_hint() for c in quiet] == [None] * len(quiet)


async def test_retries_and_configuration_changes(outbox: Outbox, sent: Recorder) -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    await outbox.publish([RetryScheduled(CHAT, 2, 1500, "x" * 2000, at), ConfigChanged(), ConfigChanged()])
    assert [c for c, _ in sent.sent] == [chat_channel(CHAT), CONFIG_CHANNEL]
    assert notes(sent) == [(RetryScheduled(CHAT, 2, 1500, "x" * 1000, at),)]


def test_every_stream_change_crosses_replicas_intact_and_an_unknown_one_is_skipped() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    every = (
        MessagesAdded(CHAT, 7), HistoryReplaced(CHAT), StatusChanged(CHAT, OWNER, ChatStatus.RUNNING, 4, uuid.uuid4()),
        ActionsResolved(CHAT, ((str(uuid.uuid4()), "approve"),)), ActionsRequested(CHAT), QueueChanged(CHAT, OWNER),
        RetryScheduled(CHAT, 1, 10, "e", at), TurnFailed(CHAT, "t"),
    )
    # Every stream change of domain/changes.py is here: a new one fails this until it is added.
    assert {type(c) for c in every} == set(_by_tag().values())
    payload = Notification(every).to_payload()
    assert len(json.dumps(payload)) < 8000  # PostgreSQL's NOTIFY limit
    assert Notification.from_payload(json.loads(json.dumps(payload))).changes == every
    # A newer replica's change (during a rolling upgrade) and a malformed one are skipped.
    payload["c"] += [["zz", {"chat_id": str(CHAT)}], ["s", {"chat_id": "nope"}], "junk"]
    assert Notification.from_payload(payload).changes == every
    assert Notification.from_payload({"reconnected": True}).changes == ()


def test_announced_changes_are_their_own_events_and_plain_events_their_own_json() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    action = uuid.uuid4()
    announced = (
        RetryScheduled(CHAT, 2, 1500, "slow", at), TurnFailed(CHAT, "boom"), ActionsResolved(CHAT, ((str(action), "deny"),))
    )
    assert [event_json(ev) for c in announced for ev in c.events()] == [
        {"type": "retry", "chat_id": str(CHAT), "attempt": 2, "delay_ms": 1500, "error": "slow", "retrying_at": at.isoformat()},
        {"type": "error", "chat_id": str(CHAT), "message": "boom"},
        {"type": "action_resolved", "chat_id": str(CHAT), "action_id": str(action), "decision": "deny"},
    ]


def test_an_owner_payload_of_another_kind_is_not_a_hint() -> None:
    assert read_owner_hint({"reconnected": True}) is None
    assert read_owner_hint({"k": "exploded", "c": str(CHAT)}) is None
    assert read_owner_hint({"k": "created", "c": "not-a-uuid"}) is None
    assert read_owner_hint({"k": "created", "c": str(CHAT)}) == ("created", CHAT)


def test_no_module_but_the_outbox_publishes_notifications() -> None:
    """The hub's `notify` is the chat channel's transport and the pubsub the others': outside the
    outbox (and the hub and pubsub themselves), nothing calls them."""
    allowed = {SRC / "streams" / "outbox.py", SRC / "streams" / "hub.py", *(SRC / "pubsub").glob("*.py")}
    publishing = re.compile(r"\.notify\(|pubsub\.publish\(|\bNotification\(")
    found = [
        f"{path.relative_to(SRC)}:{n}: {line.strip()}"
        for path in SRC.rglob("*.py") if path not in allowed
        for n, line in enumerate(path.read_text().splitlines(), 1) if publishing.search(line)
    ]
    assert found == []
