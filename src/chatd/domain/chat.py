"""Chats, messages and the status machine (SPEC §1–2)."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime

from chatd.domain.actions import ClientTool, PendingAction
from chatd.domain.parts import Part


class ChatStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"
    ERROR = "error"
    # The turn stopped for a person or a client (domain/actions.py): no worker, no lease; the
    # chat's pending actions say what it needs, and answering the last one makes it pending.
    REQUIRES_ACTION = "requires_action"

    @property
    def busy(self) -> bool:
        return self in (ChatStatus.PENDING, ChatStatus.RUNNING)


class Role(enum.StrEnum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"


class Visibility(enum.StrEnum):
    MODEL = "model"
    USER = "user"
    BOTH = "both"


class BusyBehavior(enum.StrEnum):
    QUEUE = "queue"
    INTERRUPT = "interrupt"
    STEER = "steer"
    REJECT = "reject"


class UserRole(enum.StrEnum):
    ADMIN = "admin"
    MEMBER = "member"


MAX_QUEUED_MESSAGES = 20


# --- the status machine as pure rules (ARCHITECTURE.md, "Chat status") ----------------------------
#
# Each rule looks at the chat as it is under its row lock and returns what the store must do; the
# store executes it (`store/machine.py`) and decides nothing itself. The turn generation is the
# fence: every acquire starts a new one, and so does every change that rewrites the history or
# hands the chat to a new turn (edit, promote, a send that makes an idle chat pending, a release).
# A worker writes only under the generation it acquired with, so no write of an old turn can land
# in a history that moved on, even when the same replica re-acquired the chat at once.


class ActionsFate(enum.StrEnum):
    KEEP = "keep"
    # Each pending action gets a "cancelled by the user" tool result in the history (the model
    # must see an answer to every call it made).
    CANCEL = "cancel"
    # Cancelled without results: the history that held the calls was edited away.
    DROP = "drop"


@dataclass(frozen=True, slots=True)
class Transition:
    """What the store does to one chat row. Leaving `running` always releases the lease."""

    # The new status; None keeps the current one.
    status: ChatStatus | None = None
    # Start a new turn generation: every write of the current turn is refused from now on.
    advance: bool = False
    # Clear the lease (worker_id, started_at, heartbeat_at).
    release: bool = False
    clear_error: bool = False
    # Move the oldest queued message into the history first (FIFO).
    promote: bool = False
    # Drop every queued message (an edit restarts the conversation from the edited message).
    clear_queue: bool = False
    # What becomes of the chat's pending actions (human in the loop), done before any promotion.
    actions: ActionsFate = ActionsFate.KEEP

    def changes_status_from(self, current: ChatStatus) -> bool:
        return self.status is not None and self.status is not current


NOTHING = Transition()
# A new turn must run: the chat becomes pending under a new generation.
_TO_PENDING = Transition(ChatStatus.PENDING, advance=True, release=True, clear_error=True)


class SendKind(enum.StrEnum):
    # Straight into the history (an idle chat without a backlog).
    HISTORY = "history"
    # Into the queue, behind the running turn or the backlog.
    QUEUE = "queue"


@dataclass(frozen=True, slots=True)
class SendPlan:
    kind: SendKind
    transition: Transition
    # The running turn takes the message at its next tool boundary.
    steer: bool = False


def status_after_interrupt(current: ChatStatus) -> ChatStatus:
    """Interrupting goes to waiting, unless a new message already made the chat pending."""
    return ChatStatus.PENDING if current is ChatStatus.PENDING else ChatStatus.WAITING


def should_queue(status: ChatStatus, queue_length: int) -> bool:
    """A sent message is queued while the chat is busy or waits for an answer to a pending action,
    or behind an existing backlog (FIFO)."""
    return status.busy or status is ChatStatus.REQUIRES_ACTION or queue_length > 0


def plan_send(status: ChatStatus, backlog: int, behavior: BusyBehavior, max_queued: int) -> SendPlan:
    """A user message arrives. Raises `ChatBusy` (reject) or `QueueFull`; then nothing is written."""
    from chatd.errors import ChatBusy, QueueFull

    if not should_queue(status, backlog):
        # Answered actions whose results no turn saved (their resumed turn was interrupted before
        # it wrote them) get "cancelled" results first: nothing may come between calls and results.
        return SendPlan(SendKind.HISTORY, replace(_TO_PENDING, actions=ActionsFate.CANCEL))
    if behavior is BusyBehavior.REJECT:
        raise ChatBusy("The chat is busy; try again when it is waiting.", {"status": status.value})
    if backlog >= max_queued:
        raise QueueFull("Message queue is full.", {"max_queued_messages": max_queued})
    steer = behavior is BusyBehavior.STEER and status is ChatStatus.RUNNING
    if behavior is BusyBehavior.INTERRUPT and status is ChatStatus.RUNNING:
        # The owning worker sees `waiting`, saves the partial answer, then promotes the queue.
        return SendPlan(SendKind.QUEUE, plan_interrupt(status), steer=False)
    if status is ChatStatus.REQUIRES_ACTION:
        if behavior is BusyBehavior.INTERRUPT:
            # No turn to stop: the pending actions get "cancelled" results, then the message runs.
            return SendPlan(SendKind.QUEUE, plan_interrupt(status, backlog + 1))
        # Queued (a steer too: no turn runs to take it) behind the answer the chat waits for.
        return SendPlan(SendKind.QUEUE, NOTHING)
    if not status.busy:
        # Idle with a backlog (e.g. its worker vanished after an interrupt): nobody else will
        # promote it, so promote the head now and keep FIFO order.
        # Open actions first, as when a message goes straight into the history (above).
        return SendPlan(SendKind.QUEUE, replace(_TO_PENDING, promote=True, actions=ActionsFate.CANCEL), steer=steer)
    return SendPlan(SendKind.QUEUE, NOTHING, steer=steer)


def plan_edit(status: ChatStatus) -> Transition:
    """A user message is edited: the history from it on is replaced, the queue cleared, and the
    running turn (if any) fenced off: its late writes would answer the old message."""
    del status  # any status: the edited history must run
    # Pending actions belong to calls the edit removed from the history: no result is needed.
    return replace(_TO_PENDING, clear_queue=True, actions=ActionsFate.DROP)


def plan_interrupt(status: ChatStatus, backlog: int = 0) -> Transition:
    """Stop a running turn. The generation stays: the interrupted turn may still save its partial
    answer (which answers the history as it is) and then settle the chat (`plan_finish`); any
    later change that moves the history on advances the generation and fences it off.

    A chat waiting for answers has no turn to stop: its pending actions are cancelled (the model
    reads "cancelled by the user") and, as a finished turn would, the oldest queued message runs."""
    if status is ChatStatus.REQUIRES_ACTION:
        if backlog:
            return replace(_TO_PENDING, promote=True, actions=ActionsFate.CANCEL)
        return Transition(ChatStatus.WAITING, advance=True, release=True, clear_error=True, actions=ActionsFate.CANCEL)
    if status is not ChatStatus.RUNNING:
        # Pending wins (a new message must run); waiting/error have nothing to stop.
        return NOTHING
    return Transition(status_after_interrupt(status), release=True)


def plan_promote(status: ChatStatus) -> Transition:
    """A queued message is moved into the history by hand: a new turn answers it. Open actions
    are cancelled first, with results (their calls must be answered before the message): those
    waiting for an answer, and answered ones whose results a turn has not saved yet."""
    del status
    return replace(_TO_PENDING, actions=ActionsFate.CANCEL)


def plan_archive(status: ChatStatus) -> Transition:
    """Archiving stops a busy chat like an interrupt (an archived chat promotes nothing), and
    cancels the pending actions of a chat waiting for answers."""
    if status is ChatStatus.REQUIRES_ACTION:
        return Transition(ChatStatus.WAITING, advance=True, release=True, actions=ActionsFate.CANCEL)
    # A pending chat may hold answered actions whose results its next turn was to produce: they
    # get their results now, or a later message would follow the calls without them.
    return Transition(ChatStatus.WAITING, release=True, actions=ActionsFate.CANCEL) if status.busy else NOTHING


def plan_acquire(status: ChatStatus) -> Transition | None:
    """A worker takes a pending chat under a new generation (the store sets the lease)."""
    return Transition(ChatStatus.RUNNING, advance=True) if status is ChatStatus.PENDING else None


def plan_release(status: ChatStatus) -> Transition:
    """Shutdown, a stale heartbeat or a dead replica: the chat goes back to pending for any
    worker, and the turn that held it is fenced off (it may still be alive, only slow)."""
    return Transition(ChatStatus.PENDING, advance=True, release=True) if status is ChatStatus.RUNNING else NOTHING


class WriteKind(enum.StrEnum):
    # A step (or compaction) of the turn's answer: also accepted after an interrupt (`waiting`),
    # so the partial answer is kept.
    STEP = "step"
    # Anything that needs the lease: heartbeat, steered messages, starting a tool call, release.
    LEASE = "lease"
    # The end of the turn (`finish_turn`): a step-kind write that also finds the chat waiting for
    # the answers its own last step asked for (`requires_action` under the same generation).
    SETTLE = "settle"


def worker_owns(
    status: ChatStatus, generation: int, worker_id: uuid.UUID | None, *, mine: int, me: uuid.UUID, kind: WriteKind
) -> bool:
    """Whether a worker's write under generation `mine` may change the chat."""
    if generation != mine:
        return False
    if status is ChatStatus.RUNNING:
        return worker_id == me
    if status is ChatStatus.REQUIRES_ACTION:
        return kind is WriteKind.SETTLE
    return kind in (WriteKind.STEP, WriteKind.SETTLE) and status is ChatStatus.WAITING


class TurnEnd(enum.StrEnum):
    COMPLETED = "completed"
    INTERRUPTED = "interrupted"
    ERROR = "error"
    SHUTDOWN = "shutdown"
    # The turn lost the database (a blip): the chat goes back to pending, it does not fail.
    DATABASE_LOST = "database_lost"


@dataclass(frozen=True, slots=True)
class FinishPlan:
    # False: the turn was fenced off (another turn holds or held the chat): change and publish nothing.
    applied: bool
    transition: Transition = NOTHING
    # The queue waits because the owner's spend limit is reached.
    spend_blocked: bool = False


def plan_finish(
    status: ChatStatus, *, owned: bool, end: TurnEnd, has_queue: bool, archived: bool, may_spend: bool
) -> FinishPlan:
    """Settle the chat after a turn (SPEC §2, cleanup precedence). `owned`: the chat is still at
    the turn's generation (running under it, or interrupted to waiting under it)."""
    if status is ChatStatus.PENDING:
        # Edited or promoted meanwhile: the new work runs next (a new generation already).
        return FinishPlan(applied=True)
    if not owned:
        return FinishPlan(applied=False)
    if status is ChatStatus.REQUIRES_ACTION:
        # The turn's last step asked for answers and released the chat: it stays as it is (the
        # queue waits behind the answers), whatever ended the turn after that.
        return FinishPlan(applied=True)
    if status is ChatStatus.RUNNING and end in (TurnEnd.SHUTDOWN, TurnEnd.DATABASE_LOST):
        return FinishPlan(applied=True, transition=plan_release(status))
    if status is ChatStatus.RUNNING and end is TurnEnd.ERROR:
        return FinishPlan(applied=True, transition=Transition(ChatStatus.ERROR, release=True))
    if status is ChatStatus.ERROR:
        return FinishPlan(applied=True)
    # Completed, or interrupted (waiting): promote the oldest queued message, FIFO. An archived
    # chat (a closed sub-agent) stays stopped: its queue waits for an unarchive.
    queue = has_queue and not archived
    if queue and may_spend:
        return FinishPlan(applied=True, transition=replace(_TO_PENDING, promote=True))
    return FinishPlan(
        applied=True,
        transition=Transition(ChatStatus.WAITING, release=True, clear_error=True),
        spend_blocked=queue,
    )


def status_version(status: ChatStatus, generation: int) -> tuple[int, int]:
    """A per-chat order of status changes, for notifications that can arrive out of order (they
    are published after commit, on other connections). Within one generation a chat only moves
    from busy (pending, or running: they never share a generation, acquire advances it) to idle
    (waiting or error, which never follow each other within a generation), so (generation,
    busy=0 | idle=1) grows with every change (property-tested)."""
    return generation, 0 if status.busy else 1


def plan_request_actions(status: ChatStatus) -> Transition | None:
    """A step of the turn (already checked by `worker_owns`) ends in tool calls that need answers.
    Running: the chat waits for them holding no worker and no lease; the generation stays, so the
    turn that asked may still settle (`plan_finish`), and the answer advances it. Interrupted
    meanwhile (`waiting`): None, the actions are cancelled at once (the user is already there)."""
    if status is ChatStatus.RUNNING:
        return Transition(ChatStatus.REQUIRES_ACTION, release=True)
    return None


def plan_answer_action(status: ChatStatus, unanswered: int) -> Transition:
    """An action was answered. The last answer resumes the chat under a new generation, like a
    promote: the next turn turns the answers into results, and nothing older can write."""
    if status is not ChatStatus.REQUIRES_ACTION or unanswered:
        return NOTHING
    return _TO_PENDING


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    reasoning_tokens: int = 0
    cache_creation_tokens: int = 0
    cache_read_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.total_tokens + other.total_tokens,
            self.reasoning_tokens + other.reasoning_tokens,
            self.cache_creation_tokens + other.cache_creation_tokens,
            self.cache_read_tokens + other.cache_read_tokens,
        )


@dataclass(frozen=True, slots=True)
class Chat:
    id: uuid.UUID
    owner_id: uuid.UUID
    title: str
    status: ChatStatus
    worker_id: uuid.UUID | None
    started_at: datetime | None
    heartbeat_at: datetime | None
    last_error: str | None
    last_model_config_id: uuid.UUID | None
    workspace_id: uuid.UUID | None
    parent_chat_id: uuid.UUID | None
    root_chat_id: uuid.UUID | None
    mode: str | None
    mcp_server_ids: list[uuid.UUID]
    archived: bool
    created_at: datetime
    updated_at: datetime
    # The turn generation (the fence of worker writes): see the rules above.
    generation: int = 0
    # Messages waiting in the chat's queue, and how many of them steer the running turn.
    queued_count: int = 0
    steering_count: int = 0
    # The trace of the latest turn (when tracing is on): for admins, never in the public chat.
    trace_id: str | None = None
    # Tools the owner approved for the rest of this chat ("always allow"; human in the loop).
    allowed_tools: list[str] = field(default_factory=list)
    # Tools the chat's client runs itself, declared when the chat was created.
    client_tools: list[ClientTool] = field(default_factory=list)
    # What the chat waits for while `requires_action` (filled by the reads that show a chat).
    pending_actions: list[PendingAction] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Message:
    id: int
    chat_id: uuid.UUID
    role: Role
    content: list[Part]
    visibility: Visibility
    created_at: datetime
    created_by: uuid.UUID | None = None
    model_config_id: uuid.UUID | None = None
    usage: Usage | None = None
    context_limit: int | None = None
    total_cost_micros: int | None = None
    runtime_ms: int | None = None
    compressed: bool = False


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    id: int
    chat_id: uuid.UUID
    content: list[Part]
    created_at: datetime
    # Sent with busy behaviour `steer` to a running turn: it joins that turn at its next tool
    # boundary instead of waiting for the turn to end (if the turn ends first, it runs next).
    steer: bool = False


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message about to be inserted."""

    role: Role
    content: list[Part]
    visibility: Visibility = Visibility.BOTH
    created_by: uuid.UUID | None = None
    model_config_id: uuid.UUID | None = None
    usage: Usage | None = None
    context_limit: int | None = None
    total_cost_micros: int | None = None
    runtime_ms: int | None = None
    compressed: bool = False
    extra: dict[str, object] = field(default_factory=dict)
