"""One chat's turn on this worker (SPEC §5): load and connect in parallel, build the prompt and
the tool list, run the agent loop, then settle the chat's status and announce it."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from chatd import tracing
from chatd.domain.actions import PendingAction
from chatd.domain.changes import (
    MessagesAdded,
    QueueChanged,
    TitleChanged,
    TurnFailed,
    status_changes,
)
from chatd.domain.chat import Chat, ChatStatus, Message, Role
from chatd.domain.clock import Clock
from chatd.domain.config import User
from chatd.domain.mcp import McpServerConfig
from chatd.domain.parts import NoticePart, text_of
from chatd.domain.tools import Tool
from chatd.errors import ChatdError, DatabaseUnavailable
from chatd.logs import redact
from chatd.loop import (
    ResolvedFile,
    ToolImages,
    TurnControl,
    TurnError,
    TurnOptions,
    TurnOutcome,
    fallback_title,
    generate_title,
    run_turn,
)
from chatd.mcp import McpConnections, OAuthToken, connect_all, system_prompt_section
from chatd.mcp.pool import McpPool
from chatd.providers import ProviderClients, ProviderLease
from chatd.pubsub.base import PubSub
from chatd.settings import Settings
from chatd.store import chats as chat_store
from chatd.store import files as file_store
from chatd.store import mcp_servers as mcp_store
from chatd.store import turns
from chatd.store.database import Database, is_connection_error
from chatd.store.secrets import SecretBox
from chatd.store.turns import FinishResult, TurnEnd
from chatd.streams.hub import StreamHub
from chatd.streams.outbox import Outbox
from chatd.tools.output import ToolOutputs
from chatd.tools.question import QUESTION_SECTION, AskUserQuestion
from chatd.worker.approval import client_tools, gate_tools
from chatd.worker.asking import InFlightAsker
from chatd.worker.config_cache import ConfigCache
from chatd.worker.journal import ToolJournal
from chatd.worker.models import TurnModel, resolve_turn_model
from chatd.worker.prompt import SUBAGENT_INSTRUCTION, build_prompt, user_instructions
from chatd.worker.sink import StoreSink

log = logging.getLogger(__name__)

# Why a chat's server is not there this turn, when an admin disabled it after the chat chose it.
DISABLED = "an admin disabled it"

# Seconds between attempts to settle a turn's end while the database is away (bounded: ~30 s).
SETTLE_BACKOFF = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0)

# Extra tools and prompt sections for a turn (workspace tools, sub-agents); MCP tools follow them.
ToolProvider = Callable[["TurnContext"], Awaitable[tuple[list[Tool], list[str]]]]
TokenSource = Callable[[uuid.UUID, list[McpServerConfig]], Awaitable[Mapping[uuid.UUID, OAuthToken]]]
# Called after a turn ends, whatever the chat (web push filters): with the outcome, or the error
# text of a failed turn (once the model and owner were loaded); not on shutdown or lost ownership
# to another worker. A hook must return quickly (the next turn of the chat may be waiting).
TurnEndHook = Callable[["TurnContext", FinishResult, TurnOutcome | None, str | None], Awaitable[None]]
# Called when a running call starts waiting for the chat's user (an MCP server's elicitation: the
# chat stays `running`, so no turn end says so). Must return quickly: the call is waiting.
AskHook = Callable[["TurnContext", PendingAction], Awaitable[None]]


@dataclass
class TurnContext:
    chat: Chat
    owner: User
    model: TurnModel
    worker_id: uuid.UUID


@dataclass
class TurnDeps:
    db: Database
    hub: StreamHub
    pubsub: PubSub
    box: SecretBox
    clock: Clock
    settings: Settings
    # Provider SDK clients shared by the replica's turns (owned and closed by the app).
    providers: ProviderClients
    # Cached configuration reads (model configs, providers, users, MCP servers).
    config: ConfigCache
    tool_providers: list[ToolProvider] = field(default_factory=list)
    end_hooks: list[TurnEndHook] = field(default_factory=list)
    ask_hooks: list[AskHook] = field(default_factory=list)
    # The owner's OAuth2 tokens for these servers, refreshed when due (default: as stored).
    token_source: TokenSource | None = None
    # A fresh OAuth2 token after an MCP server answered 401 mid-turn (single-flight refresh).
    reauthorize: Callable[[uuid.UUID, McpServerConfig, OAuthToken], Awaitable[OAuthToken | None]] | None = None
    # The replica's warm MCP connections (None: each turn connects and closes its own).
    mcp_pool: McpPool | None = None
    # True when a tool provider states the chat's current workspace each turn.
    workspace_aware: bool = False
    # Injected by tests to control retry waits.
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    # Announces what the turns changed, after each commit (the only publisher).
    outbox: Outbox = field(init=False)

    def __post_init__(self) -> None:
        self.outbox = Outbox(self.hub, self.pubsub)


def internal_error_text(exc: Exception) -> str:
    """What the chat's owner reads for an unexpected failure. A database error's text holds the
    SQL and its parameters: that goes to the log (with the traceback), never to the chat. Other
    libraries' errors may quote URLs and headers, so they get the log's redaction too."""
    if isinstance(exc, SQLAlchemyError):
        return "Internal error: a database operation failed (the server log has the details)."
    return redact(f"Internal error: {type(exc).__name__}: {exc}")[:1000]


class ChatTurn:
    """Runs one acquired chat to the end of its turn. `control.interrupt()` stops it keeping the
    partial answer; cancelling the task (shutdown) gives the chat back as pending."""

    def __init__(self, deps: TurnDeps, chat: Chat, worker_id: uuid.UUID) -> None:
        self.deps = deps
        self.chat = chat
        self.worker_id = worker_id
        self.control = TurnControl()
        self.background: set[asyncio.Task[Any]] = set()
        # The chat's status was settled (or the turn found itself fenced off): nothing left to
        # interrupt, so the worker ignores the status notifications that follow, its own included.
        self.settled = False
        # Set once the model and owner are loaded, so turn-end hooks also run after an error.
        self.ctx: TurnContext | None = None
        # The turn's hold on the shared provider client, from the moment the model is resolved.
        self._lease: ProviderLease | None = None
        # The turn's root span (non-recording when tracing is off).
        self._span: tracing.Span = tracing.NO_SPAN
        # Whether the chat, as the turn's first read finds it, is still this turn's (set by the pool).
        self.holds: Callable[[Chat], bool] | None = None

    async def run(self) -> None:
        chat = self.chat
        attrs = {
            "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "chatd", "gen_ai.conversation.id": str(chat.id),
            "chatd.chat.id": str(chat.id), "chatd.turn.generation": chat.generation, "chatd.replica": str(self.worker_id),
        }
        try:
            # One trace per turn, whatever context the pool's task was started in.
            with tracing.span("invoke_agent chatd", attrs, root=True) as self._span:
                await self._run_and_finish()
        finally:
            # After the end hooks, which may still call the model (push summaries).
            if self._lease is not None:
                await self._lease.release()

    async def _run_and_finish(self) -> None:
        chat = self.chat
        outcome: TurnOutcome | None = None
        error: str | None = None
        end = TurnEnd.COMPLETED
        ctx: TurnContext | None = None
        try:
            outcome, ctx = await self._run_turn()
            end = TurnEnd.INTERRUPTED if outcome.reason == "interrupted" else TurnEnd.COMPLETED
        except asyncio.CancelledError:
            if self.control.interrupted:
                end = TurnEnd.INTERRUPTED  # interrupted before the loop started
            else:
                await self._finish(TurnEnd.SHUTDOWN, None, None, None)
                raise
        except DatabaseUnavailable:
            log.warning("turn of chat %s lost the database; the chat is given back", chat.id, exc_info=True)
            end = TurnEnd.DATABASE_LOST
        except TurnError as exc:
            end, error = TurnEnd.ERROR, exc.message
        except ChatdError as exc:
            end, error = TurnEnd.ERROR, exc.message
        except Exception as exc:
            if is_connection_error(exc):
                log.warning("turn of chat %s lost the database; the chat is given back", chat.id, exc_info=True)
                end = TurnEnd.DATABASE_LOST
            else:
                log.exception("turn of chat %s failed", chat.id)
                end, error = TurnEnd.ERROR, internal_error_text(exc)
        await self._finish(end, outcome, error, ctx or self.ctx)

    async def _finish(self, end: TurnEnd, outcome: TurnOutcome | None, error: str | None, ctx: TurnContext | None) -> None:
        d, chat_id = self.deps, self.chat.id
        tracing.set_attributes(self._span, {
            "chatd.turn.end": end.value, "chatd.turn.steps": outcome.steps if outcome else None,
            "chatd.turn.reason": str(outcome.reason) if outcome else None,
        })
        if end is TurnEnd.ERROR:
            tracing.fail(self._span, "turn_error", error)
        # The end of a turn must be written even when a shutdown cancels us meanwhile.
        with tracing.span("chatd.finish_turn", {"chatd.turn.end": end.value}):
            res = await asyncio.shield(self._settle(end, error))
        self.settled = True
        if not res.applied:
            # Fenced off: a newer turn holds the chat. If it runs here, the buffer is its own.
            if not (res.chat.status is ChatStatus.RUNNING and res.chat.worker_id == self.worker_id):
                d.hub.stop_buffering(chat_id)
            return
        d.hub.stop_buffering(chat_id)
        await d.outbox.publish([
            *([TurnFailed(chat_id, error)] if error is not None and res.chat.status is ChatStatus.ERROR else []),
            *MessagesAdded.of(chat_id, [res.promoted] if res.promoted is not None else []),
            *([TurnFailed(chat_id, res.usage_limited.message)] if res.usage_limited is not None else []),
            *status_changes(res.chat),
            *([QueueChanged(chat_id, res.chat.owner_id)] if res.queue_changed else []),
        ])
        if ctx is not None and end not in (TurnEnd.SHUTDOWN, TurnEnd.DATABASE_LOST):
            for hook in d.end_hooks:
                try:
                    await hook(ctx, res, outcome, error)
                except Exception:
                    log.warning("turn-end hook failed for chat %s", chat_id, exc_info=True)

    async def _settle(self, end: TurnEnd, error: str | None) -> FinishResult:
        """`finish_turn`, waiting out a database blip with a bounded backoff (about half a minute in
        all). If the database stays away, the error reaches the pool, which gives the chat back at
        its next heartbeat that gets through (or stale recovery does, on any replica)."""
        d = self.deps
        for delay in SETTLE_BACKOFF:
            try:
                return await turns.finish_turn(d.db, d.clock.now(), self.chat.id, self.worker_id, self.chat.generation, end, error)
            except DatabaseUnavailable:
                log.info("settling chat %s: the database is away; retrying in %.1f s", self.chat.id, delay)
                await d.sleep(delay)
        return await turns.finish_turn(d.db, d.clock.now(), self.chat.id, self.worker_id, self.chat.generation, end, error)

    async def _run_turn(self) -> tuple[TurnOutcome, TurnContext]:
        d, chat = self.deps, self.chat
        mcp_tools: list[Tool] = []
        conns: McpConnections | None = None

        async def mcp() -> tuple[list[Tool], str, McpConnections | None]:
            configs, disabled, tokens = await self._mcp_configs()
            for config in disabled:
                await self._mcp_failed(config, DISABLED)
            if not configs and not disabled:
                return [], "", None
            with tracing.span("chatd.mcp.connect", {"chatd.mcp.servers": [c.slug for c in configs]}) as span:
                tools, conns = await connect_all(
                    configs, tokens, store_file=self._store_file, on_server_error=self._mcp_failed,
                    connect_timeout=d.settings.mcp_connect_timeout, call_timeout=d.settings.mcp_call_timeout,
                    stdio_connect_timeout=d.settings.mcp_stdio_connect_timeout,
                    reauthorize=self._reauthorize if d.reauthorize is not None else None,
                    identity=(chat.owner_id, chat.id), pool=d.mcp_pool,
                    elicitation_timeout=d.settings.mcp_elicitation_timeout,
                )
                tracing.set_attributes(span, {"chatd.mcp.connected": [c.config.slug for c in conns.servers], "chatd.mcp.tools": len(tools)})
            for config in disabled:
                conns.mark_unavailable(config, DISABLED)
            return tools, system_prompt_section(conns), conns

        mcp_task = asyncio.create_task(mcp(), name=f"mcp-{chat.id}")
        try:
            model, inputs, owner, _ = await asyncio.gather(
                self._resolve_model(),
                turns.turn_inputs(d.db, d.clock.now(), chat.id),
                d.config.user(chat.owner_id),
                self._record_trace(),
            )
            rows, answered = inputs.prompt, inputs.answered
            if self.holds is not None and (inputs.chat is None or not self.holds(inputs.chat)):
                # An interrupt or edit that landed between the acquire and the worker's subscription
                # to the chat's changes (this is the first read after it): stop before the model.
                self.control.interrupt()
            ctx = self.ctx = TurnContext(chat, owner, model, self.worker_id)
            self._maybe_title(ctx, rows)
            sections: list[str] = []
            tools: list[Tool] = []
            if chat.parent_chat_id is not None:
                sections.append(SUBAGENT_INSTRUCTION)
            for provide in d.tool_providers:
                more_tools, more_sections = await provide(ctx)
                tools += more_tools
                sections += more_sections
            more_tools, more_sections = self._action_tools()
            tools += more_tools
            sections += more_sections
            sections.append(user_instructions(owner.custom_prompt))
            try:
                mcp_tools, mcp_section, conns = await mcp_task
            except Exception:
                log.warning("MCP connections for chat %s failed", chat.id, exc_info=True)
                mcp_section = ""
            sections.append(mcp_section)
            prompt = build_prompt(rows, sections, replace_workspace_note=d.workspace_aware)
            sink = StoreSink(d.db, d.hub, d.outbox, d.clock, chat, self.worker_id, model.config.id)
            options = TurnOptions(
                chat_id=chat.id,
                owner_id=chat.owner_id,
                max_steps=d.settings.max_steps,
                max_attempts=d.settings.max_retry_attempts,
                stall_timeout=d.settings.stall_timeout,
                fast_streams=d.settings.fast_streams,
                file_resolver=self._resolve_files,
                sleep=d.sleep,
                resume=answered,
                tool_outputs=ToolOutputs(d.settings.tool_result_max_chars, self._store_file, self._read_output),
                tool_images=ToolImages(
                    accepted=model.config.options.images and d.settings.tool_image_max_bytes > 0,
                    max_bytes=d.settings.tool_image_max_bytes,
                ),
                # A call to a tool of a chat's server that is down or disabled says so.
                explain_missing_tool=conns.explain_missing if conns is not None else None,
                ask=InFlightAsker(
                    d.db,
                    d.outbox,
                    d.pubsub,
                    d.clock,
                    chat.id,
                    self.worker_id,
                    chat.generation,
                    d.settings.mcp_elicitation_timeout,
                    chat.owner_id,
                    on_asked=[functools.partial(hook, ctx) for hook in d.ask_hooks],
                ),
            )
            # Non-idempotent calls are recorded before they run: at most once across crashes.
            journal = ToolJournal(d.db, d.clock, chat.id, self.worker_id, chat.generation)
            # Client tools last: a client's tool replaces a built-in of the same name in its chat.
            offered = gate_tools([*tools, *mcp_tools], chat, d.settings) + client_tools(chat, d.settings)
            outcome = await run_turn(model.resolved, prompt, journal.wrap(offered), options, sink, self.control)
            return outcome, ctx
        finally:
            if not mcp_task.done():
                mcp_task.cancel()
                with contextlib.suppress(BaseException):
                    await mcp_task
            elif conns is None and not mcp_task.cancelled() and mcp_task.exception() is None:
                conns = mcp_task.result()[2]
            if conns is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(conns.close())

    async def _record_trace(self) -> None:
        # Only while tracing is on: a turn without a trace costs no extra write.
        if (trace_id := tracing.current_trace_id()) is not None:
            await turns.record_trace(self.deps.db, self.chat.id, self.worker_id, self.chat.generation, trace_id)

    def _action_tools(self) -> tuple[list[Tool], list[str]]:
        """Built-ins that stop the turn for a person: questions go to the user of a root chat (a
        sub-agent's chat is not where the user looks)."""
        if self.chat.parent_chat_id is not None or not self.deps.settings.ask_user_question:
            return [], []
        return [AskUserQuestion()], [QUESTION_SECTION]

    async def _resolve_model(self) -> TurnModel:
        d = self.deps
        model = await resolve_turn_model(d.config, d.settings, d.providers, self.chat.last_model_config_id)
        self._lease = model.lease
        return model

    # --- MCP -------------------------------------------------------------------------------

    async def _mcp_configs(self) -> tuple[list[McpServerConfig], list[McpServerConfig], dict[uuid.UUID, OAuthToken]]:
        """The enabled servers to connect, the disabled ones the chat names (it was created before
        an admin disabled them: the chat is told rather than left with "tool not found"), and
        the owner's tokens."""
        d, chat = self.deps, self.chat
        forced, _default = await d.config.mcp_forced_and_default()
        ids = list(dict.fromkeys([*chat.mcp_server_ids, *forced]))
        if not ids:
            return [], [], {}
        found = await d.config.mcp_servers(ids)
        records = [r for r in found if r.enabled]
        disabled = [r for r in found if not r.enabled and r.id in chat.mcp_server_ids]
        tokens: dict[uuid.UUID, OAuthToken] = {}
        try:
            if d.token_source is not None:
                tokens = dict(await d.token_source(chat.owner_id, records))
            else:
                stored = await mcp_store.user_tokens(d.db, d.box, chat.owner_id)
                tokens = {sid: OAuthToken.from_record(tok) for sid, tok in stored.items()}
        except Exception:
            log.warning("could not load MCP tokens of user %s", chat.owner_id, exc_info=True)
        return records, disabled, tokens

    async def _reauthorize(self, config: McpServerConfig, rejected: OAuthToken | None) -> OAuthToken | None:
        assert self.deps.reauthorize is not None
        if rejected is None:
            return None
        return await self.deps.reauthorize(self.chat.owner_id, config, rejected)

    async def _mcp_failed(self, config: McpServerConfig, message: str) -> None:
        part = NoticePart(level="warning", text=f"MCP server {config.label} is unavailable this turn: {message}", source=config.slug)
        self.deps.hub.publish_part(self.chat.id, Role.ASSISTANT, part)

    async def _store_file(self, data: bytes, media_type: str, name: str) -> str:
        f = await file_store.save_file(self.deps.db, self.deps.clock.now(), self.chat.owner_id, name, media_type, data)
        return str(f.id)

    async def _read_output(self, file_id: str) -> tuple[bytes, str] | None:
        found = await self._resolve_files([file_id])
        f = found.get(file_id)
        return (f.data, f.media_type) if f is not None else None

    async def _resolve_files(self, ids: Sequence[str]) -> Mapping[str, ResolvedFile]:
        out: dict[str, ResolvedFile] = {}
        for fid in ids:
            try:
                f = await file_store.get_file(self.deps.db, uuid.UUID(fid))
            except (ChatdError, ValueError):
                continue
            if f.owner_id == self.chat.owner_id:
                out[fid] = ResolvedFile(f.data, f.media_type)
        return out

    # --- title -----------------------------------------------------------------------------

    def _maybe_title(self, ctx: TurnContext, prompt: list[Message]) -> None:
        """Starts the title of a chat's first turn beside it. Whether this is the first turn is
        decided from what the turn read before calling the model: the title task runs concurrently,
        and a fast model's answer, written before the task's own read, used to make every later
        check see a chat that already had its answer (and keep its provisional title for good)."""
        if not self.deps.settings.generate_titles:
            return
        users = [m for m in prompt if m.role is Role.USER]
        if len(users) != 1 or any(m.role in (Role.ASSISTANT, Role.TOOL) for m in prompt):
            return
        first = text_of(users[0].content).strip()
        if not first or (self.chat.title and self.chat.title != fallback_title(first)):
            return
        # Messages the window leaves out (model-hidden rows, a summary's history) still count, up
        # to the newest one this turn read: what the turn itself writes comes after it.
        up_to = max(m.id for m in prompt)
        # The title may outlive the turn: it holds the provider client on its own.
        task = asyncio.create_task(self._title(ctx, first, up_to, ctx.model.lease.retain()), name=f"title-{self.chat.id}")
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def _title(self, ctx: TurnContext, first: str, up_to: int, lease: ProviderLease) -> None:
        try:
            await self._make_title(ctx, first, up_to)
        finally:
            await lease.release()

    async def _make_title(self, ctx: TurnContext, first: str, up_to: int) -> None:
        d, chat = self.deps, self.chat
        try:
            users, has_answers = await turns.has_model_turns(d.db, chat.id, up_to)
            if users != 1 or has_answers:
                return
            title = await generate_title(ctx.model.quick(), first)
            if not title:
                return
            await chat_store.update_title(d.db, d.clock.now(), chat.id, title)
            await d.outbox.publish([TitleChanged(chat.id, chat.owner_id)])
        except Exception:
            log.info("title generation for chat %s failed", chat.id, exc_info=True)


__all__ = ["ChatTurn", "TurnContext", "TurnDeps"]
