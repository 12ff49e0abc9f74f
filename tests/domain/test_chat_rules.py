"""Property-based tests of the chat state machine's pure rules (domain/chat.py): any sequence of
sends, edits, interrupts, promotes, acquires, steps, steers, finishes, crashes and recoveries,
executed the way the store executes the plans, keeps three promises:

- no user message is lost (each accepted one is in the history, in the queue, or was dropped by
  an edit that cleared the queue, as SPEC §3 says an edit does);
- no step of a turn lands in a history that moved on since the turn acquired the chat (an edited
  message is never answered by the old turn);
- a running chat always has a lease, and a chat that is not running has none; at most one turn
  may write at a time;
- (human in the loop) a chat waits in `requires_action` exactly while some action of its last
  step is unanswered, holding no lease; and every tool call in the history is answered by its
  results (given, or "cancelled") before anything else follows it.
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass, field

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from chatd.domain.chat import (
    MAX_QUEUED_MESSAGES,
    ActionsFate,
    BusyBehavior,
    ChatStatus,
    SendKind,
    Transition,
    TurnEnd,
    WriteKind,
    plan_acquire,
    plan_answer_action,
    plan_archive,
    plan_edit,
    plan_finish,
    plan_interrupt,
    plan_promote,
    plan_release,
    plan_request_actions,
    plan_send,
    status_version,
    worker_owns,
)
from chatd.errors import ChatBusy, QueueFull

WORKERS = [uuid.UUID(int=i + 1) for i in range(2)]


@dataclass
class Turn:
    worker: uuid.UUID
    generation: int
    # The history version the turn was started on: its steps must land on exactly that history
    # (plus what the turn itself wrote).
    version: int
    # The chat had answered actions when the turn started: its first write turns them into results.
    resumes: bool = False


@dataclass
class Chat:
    status: ChatStatus = ChatStatus.PENDING
    generation: int = 0
    worker: uuid.UUID | None = None
    # ("user", message id) or ("assistant", turn generation); the live history.
    history: list[tuple[str, int]] = field(default_factory=list)
    queue: list[tuple[int, bool]] = field(default_factory=list)  # (message id, steer)
    # Bumped by every change of the history made by anyone but the writing turn.
    version: int = 0
    # Ids dropped from the queue by an edit (allowed: SPEC §3).
    cleared: set[int] = field(default_factory=set)
    # Ids replaced by an edit (the edited message and everything after it).
    replaced: set[int] = field(default_factory=set)
    # Actions of the last step: waiting for an answer, and answered but without a result yet.
    waiting: int = 0
    answered: int = 0


class ChatRules(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ids = itertools.count(1)
        first = next(self.ids)
        self.chat = Chat(history=[("user", first)])
        self.accepted: set[int] = {first}
        self.turns: list[Turn] = []
        self.crashed: set[uuid.UUID] = set()
        # Leases whose turn died with its worker: stale, until recovery returns the chat.
        self.dead: set[tuple[uuid.UUID, int]] = set()

    # --- executing plans as store/machine.apply does --------------------------------------------

    def apply(self, t: Transition) -> None:
        c = self.chat
        before = (c.status, status_version(c.status, c.generation))
        self._apply(t)
        after = status_version(c.status, c.generation)
        # Status notifications are ordered by this version: every change must raise it.
        assert after >= before[1]
        assert c.status is before[0] or after > before[1], (before, c.status, after)

    def _apply(self, t: Transition) -> None:
        c = self.chat
        if t.actions is not ActionsFate.KEEP and (c.waiting or c.answered):
            if t.actions is ActionsFate.CANCEL:
                c.history.append(("results", c.generation))
                c.version += 1
            c.waiting = c.answered = 0
        if t.promote and c.queue:
            mid, _ = c.queue.pop(0)
            c.history.append(("user", mid))
            c.version += 1
        if t.clear_queue:
            c.cleared |= {mid for mid, _ in c.queue}
            c.queue.clear()
        if t.status is not None:
            c.status = t.status
        if t.release:
            c.worker = None
        if t.advance:
            c.generation += 1

    def owns(self, turn: Turn, kind: WriteKind) -> bool:
        c = self.chat
        return worker_owns(c.status, c.generation, c.worker, mine=turn.generation, me=turn.worker, kind=kind)

    # --- user actions -------------------------------------------------------------------------------

    @rule(behavior=st.sampled_from(list(BusyBehavior)))
    def send(self, behavior: BusyBehavior) -> None:
        c = self.chat
        try:
            plan = plan_send(c.status, len(c.queue), behavior, MAX_QUEUED_MESSAGES)
        except (ChatBusy, QueueFull):
            return
        mid = next(self.ids)
        self.accepted.add(mid)
        if plan.kind is SendKind.HISTORY:
            # As send_message does: the plan first (open actions get their results), then the message.
            self.apply(plan.transition)
            c.history.append(("user", mid))
            c.version += 1
            return
        c.queue.append((mid, plan.steer))
        self.apply(plan.transition)

    @precondition(lambda self: any(kind == "user" for kind, _ in self.chat.history))
    @rule(data=st.data())
    def edit(self, data: st.DataObject) -> None:
        c = self.chat
        users = [i for i, (kind, _) in enumerate(c.history) if kind == "user"]
        at = data.draw(st.sampled_from(users))
        c.replaced |= {mid for kind, mid in c.history[at:] if kind == "user"}
        c.history = c.history[:at]
        mid = next(self.ids)
        self.accepted.add(mid)
        c.history.append(("user", mid))
        c.version += 1
        self.apply(plan_edit(c.status))

    @rule()
    def interrupt(self) -> None:
        self.apply(plan_interrupt(self.chat.status, len(self.chat.queue)))

    @rule()
    def archive(self) -> None:
        # Unarchiving is not modelled: an archived chat only stops (its queue waits).
        self.apply(plan_archive(self.chat.status))

    @precondition(lambda self: self.chat.waiting > 0)
    @rule()
    def answer(self) -> None:
        c = self.chat
        assert c.status is ChatStatus.REQUIRES_ACTION
        c.waiting -= 1
        c.answered += 1
        self.apply(plan_answer_action(c.status, c.waiting))

    @precondition(lambda self: bool(self.chat.queue))
    @rule(data=st.data())
    def promote(self, data: st.DataObject) -> None:
        c = self.chat
        mid, _ = c.queue.pop(data.draw(st.integers(0, len(c.queue) - 1)))
        # As promote_queued does: the plan first (open actions get their results), then the message.
        self.apply(plan_promote(c.status))
        c.history.append(("user", mid))
        c.version += 1

    # --- workers ------------------------------------------------------------------------------------

    @rule(worker=st.sampled_from(WORKERS))
    def acquire(self, worker: uuid.UUID) -> None:
        c = self.chat
        if worker in self.crashed or (t := plan_acquire(c.status)) is None:
            return
        self.apply(t)
        c.worker = worker
        self.turns.append(Turn(worker, c.generation, c.version, resumes=c.answered > 0))

    @precondition(lambda self: bool(self.turns))
    @rule(data=st.data())
    def step(self, data: st.DataObject) -> None:
        turn = data.draw(st.sampled_from(self.turns))
        if not self.owns(turn, WriteKind.STEP):
            return  # LostOwnership: nothing written
        c = self.chat
        assert turn.version == c.version, "a step of an old turn landed in a history that moved on"
        if turn.resumes:
            # The resumed turn's first write: the answers become the calls' results.
            assert c.answered > 0 and c.waiting == 0
            turn.resumes = False
            c.history.append(("results", turn.generation))
            c.answered = 0
            return
        if not data.draw(st.booleans(), label="asks"):
            c.history.append(("assistant", turn.generation))
            return
        # A step whose calls wait for answers.
        c.history.append(("calls", turn.generation))
        t = plan_request_actions(c.status)
        if t is None:
            # Interrupted meanwhile: the actions are cancelled with the step.
            c.history.append(("results", turn.generation))
        else:
            c.waiting = data.draw(st.integers(1, 3), label="actions")
            self.apply(t)
        # The turn wrote both: its view stays current. It ends here (it writes nothing more
        # but its settling).
        turn.version = c.version

    @precondition(lambda self: bool(self.turns))
    @rule(data=st.data())
    def steer(self, data: st.DataObject) -> None:
        turn = data.draw(st.sampled_from(self.turns))
        c = self.chat
        if not self.owns(turn, WriteKind.LEASE):
            return
        # The turn takes them itself (they go into its prompt): its view stays current.
        for mid, _ in [q for q in c.queue if q[1]]:
            c.history.append(("user", mid))
        c.queue = [q for q in c.queue if not q[1]]

    @precondition(lambda self: bool(self.turns))
    @rule(data=st.data(), end=st.sampled_from(list(TurnEnd)), may_spend=st.booleans())
    def finish(self, data: st.DataObject, end: TurnEnd, may_spend: bool) -> None:
        turn = data.draw(st.sampled_from(self.turns))
        self.turns.remove(turn)
        c = self.chat
        plan = plan_finish(
            c.status, owned=self.owns(turn, WriteKind.SETTLE), end=end, has_queue=bool(c.queue), archived=False, may_spend=may_spend
        )
        if plan.applied:
            self.apply(plan.transition)

    @rule(worker=st.sampled_from(WORKERS))
    def crash(self, worker: uuid.UUID) -> None:
        """The worker dies: its turns vanish without a word; its lease stays until recovery."""
        self.crashed.add(worker)
        self.dead |= {(t.worker, t.generation) for t in self.turns if t.worker == worker}
        self.turns = [t for t in self.turns if t.worker != worker]

    @rule()
    def recover(self) -> None:
        """Stale recovery of a chat whose turn died with its worker (its heartbeat stopped)."""
        c = self.chat
        if c.status is ChatStatus.RUNNING and c.worker is not None and (c.worker, c.generation) in self.dead:
            self.apply(plan_release(c.status))

    @rule(worker=st.sampled_from(WORKERS))
    def restart(self, worker: uuid.UUID) -> None:
        self.crashed.discard(worker)

    # --- the promises -------------------------------------------------------------------------------

    @invariant()
    def no_user_message_is_lost(self) -> None:
        c = self.chat
        in_history = {mid for kind, mid in c.history if kind == "user"}
        in_queue = {mid for mid, _ in c.queue}
        assert not in_history & in_queue
        assert self.accepted == in_history | in_queue | c.cleared | c.replaced

    @invariant()
    def running_means_leased(self) -> None:
        c = self.chat
        assert (c.status is ChatStatus.RUNNING) == (c.worker is not None)

    @invariant()
    def at_most_one_turn_may_write(self) -> None:
        writers = [t for t in self.turns if self.owns(t, WriteKind.STEP)]
        assert len(writers) <= 1

    @invariant()
    def a_running_chat_is_held_by_a_live_turn_or_recoverable(self) -> None:
        c = self.chat
        if c.status is ChatStatus.RUNNING:
            assert c.worker is not None
            held = any(t.generation == c.generation and t.worker == c.worker for t in self.turns)
            assert held or (c.worker, c.generation) in self.dead

    @invariant()
    def a_chat_requires_action_exactly_while_an_action_is_unanswered(self) -> None:
        c = self.chat
        assert (c.status is ChatStatus.REQUIRES_ACTION) == (c.waiting > 0)
        if c.status is ChatStatus.REQUIRES_ACTION:
            assert c.worker is None and c.answered + c.waiting > 0

    @invariant()
    def every_call_is_answered_before_anything_follows_it(self) -> None:
        h = self.chat.history
        for i, (kind, _) in enumerate(h[:-1]):
            if kind == "calls":
                assert h[i + 1][0] == "results", h

    @invariant()
    def a_pending_chat_fences_every_turn(self) -> None:
        if self.chat.status is ChatStatus.PENDING:
            assert not any(self.owns(t, WriteKind.STEP) for t in self.turns)


ChatRules.TestCase.settings = settings(max_examples=500, stateful_step_count=40, deadline=None, database=None)
TestChatRules = ChatRules.TestCase
