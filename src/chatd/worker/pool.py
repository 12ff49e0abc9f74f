"""The worker pool of one replica (SPEC §4): acquire pending chats in batches, run each in its
own task, heartbeat them, recover stale chats, and give everything back on shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from chatd import logs, metrics
from chatd.domain.actions import Decision
from chatd.domain.changes import ActionsResolved, Change, StatusChanged, status_changes
from chatd.domain.chat import Chat, ChatStatus
from chatd.pubsub.base import PENDING_CHANNEL, chat_channel
from chatd.store import actions as action_store
from chatd.store import chats as chat_store
from chatd.store import replicas, turns
from chatd.streams.notes import Notification
from chatd.worker.turn import ChatTurn, TurnDeps

log = logging.getLogger(__name__)

TURNS_PER_CONNECTION = 10

_STOPS = {ChatStatus.WAITING, ChatStatus.PENDING, ChatStatus.ERROR}


@dataclass(eq=False)
class _Running:
    turn: ChatTurn
    task: asyncio.Task[None]
    unsubscribe: Callable[[], Awaitable[None]] | None = None


class Workers:
    def __init__(self, deps: TurnDeps, worker_id: uuid.UUID | None = None, address: str | None = None) -> None:
        self.deps = deps
        # This replica's internal address, registered with its heartbeat (part relay).
        self.address = address
        self.settings = deps.settings
        self.worker_id = worker_id or uuid.uuid4()
        self.running: dict[uuid.UUID, _Running] = {}
        # Turns of chats that this replica re-acquired under a newer generation while the old turn
        # was still winding down (an edit, then an at-once re-acquire): fenced off and
        # interrupted, but still awaited by drain and shutdown.
        self._superseded: set[_Running] = set()
        self._wake = asyncio.Event()
        self._stopping = False
        self._acquire_lock = asyncio.Lock()
        # Tests hook in here to see a turn start (e.g. to race it).
        self.on_started: Callable[[ChatTurn], None] | None = None
        # Chats whose turn ended without settling their status (the final write failed because the
        # database was away), with the generation they were run under: given back at the next
        # heartbeat that reaches the database, not minutes later by the per-chat staleness.
        self._unsettled: dict[uuid.UUID, int] = {}
        # Our own replica heartbeat failed (the database was away), and when it went through again.
        self._heartbeat_failing = False
        self._heartbeat_back_at: datetime | None = None

    # --- the loops ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        s, pubsub = self.settings, self.deps.pubsub
        unsubscribe = await pubsub.subscribe(PENDING_CHANNEL, lambda _p: self._wake.set())
        try:
            await self.replica_heartbeat_once()
            await self.recover_once()
            async with asyncio.TaskGroup() as tg:
                loops = [
                    tg.create_task(self._every(s.acquire_interval, self.acquire_once, wake=self._wake), name="acquire"),
                    tg.create_task(self._every(s.heartbeat_interval, self.heartbeat_once), name="heartbeat"),
                    tg.create_task(self._every(self.recovery_interval, self.recover_once), name="recover"),
                    tg.create_task(self._every(self.recovery_interval, self.expire_actions_once), name="action-deadlines"),
                    tg.create_task(self._every(max(s.replica_stale_after / 3, 0.05), self.replica_heartbeat_once), name="replica"),
                ]
                await stop.wait()
                for t in loops:
                    t.cancel()
        finally:
            with contextlib.suppress(Exception):
                await unsubscribe()
            await self.shutdown()

    async def _every(self, interval: float, step: Callable[[], Awaitable[Any]], wake: asyncio.Event | None = None) -> None:
        while True:
            try:
                await step()
            except asyncio.CancelledError:
                raise
            except Exception:
                # A database blip must not kill the worker; the next round retries.
                log.warning("worker step %s failed", getattr(step, "__name__", step), exc_info=True)
            if wake is None:
                await asyncio.sleep(interval)
                continue
            # Not asyncio.wait_for: on Python 3.11 it returns the wake-up instead of raising when
            # the task is cancelled just as the event is set, and the loop ran on (a stop then
            # waited a whole acquire_interval; CI saw it).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await wake.wait()
            wake.clear()

    @property
    def turn_cap(self) -> int:
        """The most turns this replica runs at once (`max_running_turns`, else 10 per pooled
        database connection): past it, pending chats wait instead of queueing on the pool."""
        return self.settings.max_running_turns or TURNS_PER_CONNECTION * self.deps.db.capacity

    async def acquire_once(self) -> list[ChatTurn]:
        if self._stopping:
            return []
        d = self.deps
        async with self._acquire_lock:
            room = self.turn_cap - len(self.running) - len(self._superseded)
            if room <= 0:
                return []
            with metrics.ACQUIRE_SECONDS.time():
                chats = await turns.acquire_chats(d.db, d.clock.now(), self.worker_id, min(self.settings.acquire_batch, room))
            metrics.ACQUIRED.inc(len(chats))
            if self._stopping and chats:
                await self._give_back({c.id: c.generation for c in chats})
                return []
            return [await self._start(chat) for chat in chats]

    async def heartbeat_once(self) -> None:
        if self._unsettled:
            # A chat acquired again since is settled by its new turn (and fenced from this lease).
            unsettled = dict(self._unsettled)
            await self._give_back(unsettled)  # raises while the database is away: next round
            for chat_id, gen in unsettled.items():
                if self._unsettled.get(chat_id) == gen:
                    del self._unsettled[chat_id]
        leases = {chat_id: r.turn.chat.generation for chat_id, r in self.running.items()}
        if not leases:
            return
        alive = await turns.heartbeat_many(self.deps.db, self.deps.clock.now(), leases, self.worker_id)
        for chat_id, gen in leases.items():
            if chat_id not in alive and (r := self.running.get(chat_id)) is not None and r.turn.chat.generation == gen:
                log.info("chat %s is no longer ours (heartbeat matched nothing); stopping its turn", chat_id)
                r.turn.control.interrupt()

    @property
    def recovery_interval(self) -> float:
        s = self.settings
        return max(min(s.stale_after / 5, s.replica_stale_after / 3), 0.05)

    async def replica_heartbeat_once(self) -> None:
        d = self.deps
        try:
            await replicas.heartbeat(d.db, d.clock.now(), self.worker_id, self.address)
        except Exception:
            self._heartbeat_failing = True
            raise
        if self._heartbeat_failing:
            self._heartbeat_failing, self._heartbeat_back_at = False, d.clock.now()

    def _may_judge_replicas(self) -> bool:
        """After a database outage every replica's heartbeat is old at once, live ones included:
        judge the others only once they had a full stale period to write theirs again, as we did."""
        if self._heartbeat_failing:
            return False
        back = self._heartbeat_back_at
        return back is None or (self.deps.clock.now() - back).total_seconds() >= self.settings.replica_stale_after

    async def recover_once(self, dead_workers: list[uuid.UUID] | None = None) -> list[Chat]:
        """Per-chat staleness (the safety net) and, faster, chats of replicas that stopped
        heartbeating; each re-checked under its row lock."""
        d = self.deps
        dead: list[uuid.UUID] = []
        if self._may_judge_replicas():
            dead = [r for r in await replicas.dead_replicas(d.db, d.clock.now(), self.settings.replica_stale_after) if r != self.worker_id]
        dead += dead_workers or []
        recovered = await turns.recover_stale(d.db, d.clock.now(), self.settings.stale_after, dead_workers=dead)
        if dead:
            await replicas.forget(d.db, dead)
        for chat in recovered:
            log.warning("recovered stale chat %s (worker stopped heartbeating)", chat.id)
        if recovered:
            self._wake.set()
        await d.outbox.publish([c for chat in recovered for c in status_changes(chat)])
        return recovered

    async def expire_actions_once(self) -> list[Chat]:
        """The deadline sweep of pending actions (client tools): past its deadline an action is
        answered with a timeout, and a chat with nothing left to wait for resumes. Every replica
        sweeps; each chat is re-checked under its row lock, so an answer that came first wins."""
        d = self.deps
        resumed: list[Chat] = []
        changes: list[Change] = []
        for expired in await action_store.expire_due(d.db, d.clock.now()):
            chat = expired.chat
            log.info("chat %s: %d pending action(s) passed their deadline", chat.id, len(expired.actions))
            if expired.status_changed:
                changes += status_changes(chat)
                resumed.append(chat)
            changes += ActionsResolved.of(chat.id, expired.actions, Decision.TIMEOUT)
        if resumed:
            self._wake.set()
        await d.outbox.publish(changes)
        return resumed

    # --- one chat ----------------------------------------------------------------------------

    async def _start(self, chat: Chat) -> ChatTurn:
        d = self.deps
        # Buffer before `running` is published: a subscriber who sees it never misses parts.
        d.hub.start_buffering(chat.id)
        turn = ChatTurn(d, chat, self.worker_id)
        turn.holds = functools.partial(self._holds, turn=turn)
        old = self.running.get(chat.id)
        if old is not None:
            # Our own older turn of this chat has not ended yet: its generation is stale, so its
            # writes are refused; stop it and keep awaiting it.
            old.turn.control.interrupt()
            self._superseded.add(old)
        running = _Running(turn, asyncio.create_task(self._run(turn, chat), name=f"turn-{chat.id}"))
        self.running[chat.id] = running
        metrics.TURNS_RUNNING.inc()
        return turn

    async def _run(self, turn: ChatTurn, chat: Chat) -> None:
        d = self.deps
        # Ours, even if a newer turn of the chat was started before this task first ran.
        running = next(r for r in (self.running.get(chat.id), *self._superseded) if r is not None and r.turn is turn)
        # This task's own context (and the tasks it starts): its log lines name the chat and turn.
        logs.chat_id_var.set(str(chat.id))
        # The turn generation this run acquired with (every acquire advances it): turn=N.
        logs.turn_var.set(str(chat.generation))
        logs.replica_var.set(str(self.worker_id))
        try:
            running.unsubscribe = await d.pubsub.subscribe(chat_channel(chat.id), lambda p: self._on_chat_note(turn, p))
            # An interrupt or edit that landed between the acquire and the subscription is seen by
            # the turn's first read of the chat (`turn.holds`), not by a read of its own here.
            await d.outbox.publish(
                [StatusChanged(chat.id, chat.owner_id, ChatStatus.RUNNING, chat.generation, worker_id=self.worker_id)]
            )
            if self.on_started is not None:
                self.on_started(turn)
            await turn.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("worker task for chat %s failed", chat.id)
            self._unsettled[chat.id] = chat.generation
        finally:
            # Forgotten before the last await: a cancellation arriving during the unsubscribe
            # must not leave a finished turn in `running` (drain and heartbeats would see it forever).
            # A newer turn of the same chat keeps its entry. Each turn counted once at its start.
            if self.running.get(chat.id) is running:
                del self.running[chat.id]
            self._superseded.discard(running)
            metrics.TURNS_RUNNING.dec()
            # A slot is free: pending chats need not wait for the next poll.
            self._wake.set()
            if running.unsubscribe is not None:
                with contextlib.suppress(Exception):
                    await running.unsubscribe()

    def _on_chat_note(self, turn: ChatTurn, payload: dict[str, Any]) -> None:
        if turn.settled:
            # The turn is over; this is most likely its own `waiting`, whose re-read of the chat
            # cost ~8% of a one-step turn's CPU for nothing.
            return
        if payload.get("reconnected"):
            # Notifications were lost while the pubsub reconnected: ask the database instead.
            self._check_ownership(turn)
            return
        change = Notification.from_payload(payload).status
        if change is not None and (
            change.status in _STOPS or (change.status is ChatStatus.RUNNING and change.worker_id not in (None, self.worker_id))
        ):
            # A hint, not the truth: the `pending` that a send or a recovery publishes after its
            # commit can arrive after this worker acquired the chat (another replica's poll won
            # the race), and must not stop the turn it started. Interrupt and edit change the row
            # before they notify, so the database read below always sees them.
            self._check_ownership(turn)

    def _check_ownership(self, turn: ChatTurn) -> None:
        async def check() -> None:
            try:
                now = await chat_store.get_chat(self.deps.db, turn.chat.id)
            except Exception:
                # The heartbeat loop asks again within an interval and stops the turn if needed.
                log.warning("could not check the ownership of chat %s", turn.chat.id, exc_info=True)
                return
            if not self._holds(now, turn):
                turn.control.interrupt()

        task = asyncio.ensure_future(check())
        turn.background.add(task)
        task.add_done_callback(turn.background.discard)

    def _holds(self, chat: Chat, turn: ChatTurn) -> bool:
        """The chat is still running under this turn's lease (the generation tells this run from
        a later acquire of the same chat by this replica)."""
        return chat.status is ChatStatus.RUNNING and chat.worker_id == self.worker_id and chat.generation == turn.chat.generation

    # --- shutdown ----------------------------------------------------------------------------

    def _all_runs(self) -> list[_Running]:
        return [*self.running.values(), *self._superseded]

    async def drain(self) -> None:
        """Wait until every running turn has ended (tests)."""
        while runs := self._all_runs():
            await asyncio.gather(*(r.task for r in runs), return_exceptions=True)

    async def shutdown(self) -> None:
        """Cancel every turn; each gives its chat back as pending (nothing half-written)."""
        self._stopping = True
        runs = self._all_runs()
        for r in runs:
            r.task.cancel()
        await asyncio.gather(*(r.task for r in runs), return_exceptions=True)
        for r in runs:
            for t in list(r.turn.background):
                t.cancel()
        leases = dict(self._unsettled)
        for r in runs:
            # Of a chat's turns here, the newest generation is the one that can still hold it.
            leases[r.turn.chat.id] = max(leases.get(r.turn.chat.id, 0), r.turn.chat.generation)
        await self._give_back(leases)
        with contextlib.suppress(Exception):
            await replicas.forget(self.deps.db, [self.worker_id])

    async def _give_back(self, leases: dict[uuid.UUID, int]) -> None:
        if not leases:
            return
        d = self.deps
        released = await turns.release_chats(d.db, d.clock.now(), leases, self.worker_id)
        await d.outbox.publish([c for chat in released for c in status_changes(chat)])
