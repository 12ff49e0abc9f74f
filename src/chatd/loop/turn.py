"""One turn of the agent loop: model call -> tools -> persist, until the model stops (reference §5)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic_ai import messages as pm
from pydantic_ai.direct import model_request
from pydantic_ai.models import ModelRequestParameters
from pydantic_ai.settings import ModelSettings
from pydantic_ai.tools import ToolDefinition

from chatd import metrics, tracing
from chatd.domain.actions import NewAction, PendingAction, Resumption, result_for
from chatd.domain.actions import edited as action_edited
from chatd.domain.chat import Role, Usage
from chatd.domain.parts import Part, ToolCallPart, ToolResultPart, text_of
from chatd.domain.tools import Tool, ToolContext, ToolResult
from chatd.loop.convert import (
    call_args,
    estimate_tokens,
    response_parts,
    to_model_messages,
    tool_images,
    tool_return,
)
from chatd.loop.prompts import SUMMARY_PREFIX, SUMMARY_PROMPT
from chatd.loop.stream import open_stream
from chatd.loop.types import (
    INTERRUPTED_TOOL_RESULT,
    SUMMARY_TOOL_NAME,
    Compaction,
    Interrupted,
    ModelCallFailed,
    PromptMessage,
    ResolvedFile,
    RetriesExhausted,
    Step,
    TurnControl,
    TurnOptions,
    TurnOutcome,
    TurnSink,
)
from chatd.providers.cost import context_tokens, cost_micros, usage_from_pydantic
from chatd.providers.models import ResolvedModel
from chatd.providers.retry import (
    RetryDecision,
    StallTimeout,
    TruncatedStream,
    backoff_delay,
    classify,
)
from chatd.providers.streams import ModelStream
from chatd.tools.output import ReadToolOutput, spilled_file

log = logging.getLogger(__name__)
T = TypeVar("T")

_KIND_TEXT = {
    "rate_limit": "The model provider is rate limiting requests",
    "overloaded": "The model provider is overloaded",
    "unavailable": "The model provider is unavailable",
    "server_error": "The model provider had a server error",
    "connection": "The connection to the model provider failed",
    "timeout": "The request to the model provider timed out",
    "truncated": "The model's response stream ended early",
    "stall": "The model's response stream stalled",
    "auth": "The model provider rejected the credentials",
    "quota": "The model provider account is out of quota or credit",
    "context_length": "The conversation is too long for the model's context window",
    "not_found": "The model provider does not know this model",
    "invalid_request": "The model provider rejected the request",
    "cancelled": "The model call was cancelled",
    "unknown": "The model call failed",
}


def describe(decision: RetryDecision) -> str:
    head = _KIND_TEXT.get(decision.kind, "The model call failed")
    status = f" (HTTP {decision.status_code})" if decision.status_code else ""
    detail = decision.message.strip()
    if len(detail) > 500:
        detail = detail[:500] + "..."
    return f"{head}{status}: {detail}" if detail else f"{head}{status}"


# The key under which a call's edited arguments ride along with the questions it asks after its
# approval (`ActionRequest.resume`; the tool that asked ignores keys it did not write).
EDITED_ARGS = "chatd_edited_args"


async def run_turn(
    model: ResolvedModel,
    prompt: Sequence[PromptMessage],
    tools: Sequence[Tool],
    options: TurnOptions,
    sink: TurnSink,
    control: TurnControl | None = None,
) -> TurnOutcome:
    """Run one turn from `prompt` until the model stops calling tools; see the package docstring."""
    task = asyncio.current_task()
    assert task is not None
    turn = _Turn(model, tools, options, sink)
    if control is not None:
        control._attach(task)
    try:
        awaiting = {a.tool_call_id for a in options.resume}
        history = await to_model_messages(prompt, options.file_resolver, awaiting=awaiting, images=options.tool_images)
        if any(spilled_file(p.result) for m in prompt for p in m.parts if isinstance(p, ToolResultPart)):
            turn.offer_reader()
        return await turn.run(history)
    except asyncio.CancelledError:
        if control is None or not control.interrupted:
            raise  # shutdown: write nothing more; the chat goes back to pending
        if task.uncancel() > 0:
            raise  # cancelled for another reason as well (shutdown wins)
        await turn.persist_partial()
        return turn.outcome("interrupted")
    finally:
        if control is not None:
            control._detach()


def _answered(history: Sequence[pm.ModelMessage]) -> bool:
    """Whether the history already ends with the model's final answer (no tool calls to run)."""
    if not history or not isinstance(history[-1], pm.ModelResponse):
        return False
    return not any(isinstance(p, pm.ToolCallPart) for p in history[-1].parts)


async def _uncancellable(aw: Awaitable[T]) -> T:
    """Finish `aw` even if we are cancelled meanwhile, then re-raise the cancellation.

    A step write must land whole or not at all; cancelling it midway (an interrupt arriving
    during the transaction) would leave the caller unsure what was stored.
    """
    inner = asyncio.ensure_future(aw)
    cancelled = False
    while not inner.done():
        try:
            await asyncio.shield(inner)
        except asyncio.CancelledError:
            if not inner.done():
                cancelled = True
        except BaseException:
            break  # inner failed; its exception is raised below
    if cancelled:
        raise asyncio.CancelledError
    return inner.result()


@dataclass
class _StepState:
    """What a step has produced so far, kept so an interrupt can persist it."""

    index: int
    started: float
    stream: ModelStream | None = None
    response: pm.ModelResponse | None = None
    calls: list[pm.ToolCallPart] = field(default_factory=list)
    results: dict[str, ToolResultPart] = field(default_factory=dict)
    # A model call of this step failed and is being retried: an interrupt from here on keeps an
    # answer even with nothing to show, so the chat records that the turn was stopped.
    retrying: bool = False


@dataclass
class _ResumeState:
    """The answers a resumed turn is turning into results, kept so an interrupt can persist them."""

    actions: list[PendingAction]
    results: dict[str, ToolResultPart] = field(default_factory=dict)


class _Turn:
    def __init__(self, model: ResolvedModel, tools: Sequence[Tool], options: TurnOptions, sink: TurnSink) -> None:
        self.model = model
        self.options = options
        self.sink = sink
        offered = [t for t in tools if options.active_tools is None or t.name in options.active_tools]
        self.tools = {t.name: t for t in offered}
        self.tool_defs = [
            ToolDefinition(name=t.name, description=t.description, parameters_json_schema=t.parameters) for t in offered
        ]
        self.steps = 0
        self.usage = Usage()
        self.cost: int | None = None
        self.final_text = ""
        self.compactions = 0
        self.state: _StepState | None = None
        self.resuming: _ResumeState | None = None
        # Provider-reported context size of the last request and the history length it covered,
        # so the pre-step estimate only guesses the part added since.
        self._known_context: tuple[int, int] | None = None
        self._compacted_since_step = False
        self._locks: dict[str, asyncio.Lock] = {}

    def offer_reader(self) -> None:
        """Offer `read_tool_output` from now on: a result of this chat was stored as a file."""
        outputs = self.options.tool_outputs
        if outputs is None or ReadToolOutput.name in self.tools:
            return
        reader = ReadToolOutput(outputs)
        self.tools[reader.name] = reader
        self.tool_defs.append(ToolDefinition(name=reader.name, description=reader.description, parameters_json_schema=reader.parameters))

    async def _returns(self, results: Sequence[ToolResultPart]) -> list[pm.ToolReturnPart]:
        """The model's view of this turn's results, with the images they name when it takes them."""
        images = self.options.tool_images
        files: Mapping[str, ResolvedFile] = {}
        if images is not None and images.accepted and self.options.file_resolver is not None:
            ids = [fid for r in results if not r.is_error for fid, _ in tool_images(r.result)]
            if ids:
                files = await self.options.file_resolver(ids)
        return [tool_return(r, files, images, sanitize=False) for r in results]

    # ------------------------------------------------------------------------------ the loop

    async def run(self, history: list[pm.ModelMessage]) -> TurnOutcome:
        try:
            return await self._steps(history)
        except Interrupted:
            # The sink refused a write (a step or the summary rows): the chat was edited or taken
            # over meanwhile. Stop and write nothing more; it is not a failure of the turn.
            return self.outcome("lost_ownership")

    async def _steps(self, history: list[pm.ModelMessage]) -> TurnOutcome:
        if self.options.resume:
            if not await self._resume(history, list(self.options.resume)):
                return self.outcome("requires_action")
        elif _answered(history):
            # The answer was saved but the turn could not settle (the database went away between
            # the step's commit and finish_turn, or the commit's reply was lost), so the chat came
            # back as pending. Calling the model again would save a second answer to one question.
            return self.outcome("completed")
        max_steps = max(self.options.max_steps, 1)
        for index in range(max_steps):
            history = await self._compact_if_needed(history, self._estimate(history), before_step=True)
            self.state = _StepState(index=index, started=self.options.clock())
            response = await self._call_model(history)
            self.state.response = response
            calls = [p for p in response.parts if isinstance(p, pm.ToolCallPart)]
            self.state.calls = calls
            results, actions = await self._run_tools(calls) if calls else ([], [])
            step = self._build_step(response, results, interrupted=False, actions=actions)
            if calls and not actions and not self._should_compact(step.context_tokens):
                step = dataclasses.replace(step, steer_next=True)
            # From here the step belongs to the sink: an interrupt must not persist it again.
            self.state = None
            with tracing.span("chatd.persist_step", {"chatd.step.index": step.index, "chatd.messages": 1 + len(results)}):
                await _uncancellable(self.sink.persist_step(step))
            self._account(step)
            metrics.STEP_SECONDS.labels(self.model.provider_kind, self.model.spec.model).observe(step.runtime_ms / 1000)
            if actions:
                # The step waits for answers; the chat holds no worker until they come, and the
                # next turn resumes from the persisted step (`_resume`).
                return self.outcome("requires_action")
            history.append(response)
            if results:
                history.append(pm.ModelRequest(parts=await self._returns(results)))
            self._known_context = (step.context_tokens + step.usage.output_tokens, len(history))
            self._compacted_since_step = False
            history = await self._compact_if_needed(history, step.context_tokens, before_step=False)
            if not calls:
                return self.outcome("completed")
            steered = await self.sink.take_steered()
            if steered:
                history.extend(await to_model_messages(steered, self.options.file_resolver, images=self.options.tool_images))
        return self.outcome("max_steps")

    def outcome(self, reason: Any) -> TurnOutcome:
        return TurnOutcome(
            reason=reason,
            steps=self.steps,
            usage=self.usage,
            cost_micros=self.cost,
            final_text=self.final_text,
            compactions=self.compactions,
        )

    def _account(self, step: Step) -> None:
        self.steps += 1
        self.usage = self.usage + step.usage
        if step.cost_micros is not None:
            self.cost = (self.cost or 0) + step.cost_micros
        u, model = step.usage, self.model.spec.model
        metrics.count_tokens(model, u.input_tokens, u.output_tokens, u.cache_read_tokens, u.cache_creation_tokens, u.reasoning_tokens)
        if step.cost_micros:
            metrics.COST_MICROS.labels(model).inc(step.cost_micros)
        text = text_of(step.assistant_parts)
        if text.strip():
            self.final_text = text

    def _build_step(
        self, response: pm.ModelResponse, results: list[ToolResultPart], *, interrupted: bool, actions: list[NewAction] | None = None
    ) -> Step:
        usage = usage_from_pydantic(response.usage)
        started = self.state.started if self.state else self.options.clock()
        return Step(
            index=self.state.index if self.state else self.steps,
            assistant_parts=response_parts(response),
            tool_results=results,
            usage=usage,
            cost_micros=cost_micros(usage, self.model.spec.pricing),
            context_tokens=context_tokens(usage),
            context_limit=self.model.spec.context_limit,
            runtime_ms=max(int((self.options.clock() - started) * 1000), 0),
            model_name=response.model_name or self.model.spec.model,
            provider_name=response.provider_name or self.model.provider_kind,
            finish_reason=response.finish_reason,
            interrupted=interrupted,
            actions=actions or [],
        )

    # ------------------------------------------------------------------------- resuming

    async def _resume(self, history: list[pm.ModelMessage], actions: list[PendingAction]) -> bool:
        """Turn the answers the chat waited for into the calls' results (running approved tools,
        at most once through the journal) and persist them, before the model is called. False when
        a call asked again: the turn waits for that answer instead."""
        state = self.resuming = _ResumeState(actions)
        asks: dict[str, NewAction] = {}

        async def one(action: PendingAction) -> None:
            done = await self._answer(action)
            if isinstance(done, NewAction):
                asks[action.tool_call_id] = done
            else:
                state.results[action.tool_call_id] = done

        async with asyncio.TaskGroup() as group:
            for action in actions:
                group.create_task(one(action), name=f"resume:{action.tool_name}:{action.tool_call_id}")
        results = [state.results[a.tool_call_id] for a in actions if a.tool_call_id in state.results]
        for result in results:
            await self.sink.publish_part(Role.TOOL, result)
        # From here the results belong to the sink: an interrupt must not persist them again.
        self.resuming = None
        # A call that was called again with its answer may ask again (a server's next form):
        # the step waits for that answer as any step with actions does.
        new = [asks[a.tool_call_id] for a in actions if a.tool_call_id in asks]
        await _uncancellable(self.sink.persist_step(self._resumed_step(results, actions, new)))
        if new:
            return False
        _append_results(history, await self._returns(results))
        return True

    async def _answer(self, action: PendingAction) -> ToolResultPart | NewAction:
        outcome = result_for(action)
        if not outcome.run:
            return ToolResultPart(
                tool_call_id=action.tool_call_id, tool_name=action.tool_name, result=outcome.result, is_error=outcome.is_error
            )
        call = pm.ToolCallPart(action.tool_name, outcome.args, action.tool_call_id)
        started = time.monotonic()
        # Arguments the person edited before approving, kept through the questions the call asks
        # after (a server's form): the model must learn what ran when the call finally does.
        edited = outcome.args if action_edited(action) else (action.resume or {}).get(EDITED_ARGS)
        result = await self._execute(call, ask=False, resume=Resumption.of(action) if action.resume is not None else None)
        if isinstance(result, NewAction):
            if edited is None:
                return result
            request = dataclasses.replace(result.request, resume={**(result.request.resume or {}), EDITED_ARGS: edited})
            return dataclasses.replace(result, request=request)
        result = result.model_copy(update={"duration_ms": round((time.monotonic() - started) * 1000)})
        if edited is not None:
            # The model's call shows the arguments it proposed; it must learn what actually ran.
            result = result.model_copy(update={"result": {"edited_args": edited, "result": result.result}})
        return result

    def _resumed_step(self, results: list[ToolResultPart], actions: list[PendingAction], asks: list[NewAction] | None = None) -> Step:
        return Step(
            index=self.steps, assistant_parts=[], tool_results=results, usage=Usage(), cost_micros=None, context_tokens=0,
            context_limit=self.model.spec.context_limit, runtime_ms=0, model_name=None, provider_name=None,
            finish_reason=None, resolves=[a.id for a in actions], actions=asks or [],
        )  # fmt: skip

    # ------------------------------------------------------------------------- interruption

    async def persist_partial(self) -> None:
        """Keep what the interrupted step produced: partial text, calls, and their results so far."""
        if self.resuming is not None:
            await self._persist_partial_resume()
            return
        state, self.state = self.state, None
        if state is None:
            return
        response = state.response
        if response is None and state.stream is not None:
            response = state.stream.get()
        if response is None and state.retrying:
            # Stopped while waiting to retry a failed call: an empty answer, as a stop before the
            # first token of a retry also is (the model sees neither: `convert` drops it).
            response = pm.ModelResponse(parts=[])
        if response is None:
            return
        calls = state.calls or [p for p in response.parts if isinstance(p, pm.ToolCallPart)]
        results = [
            state.results.get(c.tool_call_id)
            or ToolResultPart(
                tool_call_id=c.tool_call_id,
                tool_name=c.tool_name,
                result={"error": INTERRUPTED_TOOL_RESULT},
                is_error=True,
            )
            for c in calls
        ]
        self.state = state  # index and start time for the step record
        step = self._build_step(response, results, interrupted=True)
        self.state = None
        if not step.assistant_parts and not step.tool_results and not state.retrying:
            return
        try:
            await _uncancellable(self.sink.persist_step(step))
        except Interrupted:
            return
        except Exception:
            # The turn is over either way; the reference logs this (OnInterruptedPersistError).
            log.exception("persisting the interrupted step failed")
            return
        self._account(step)

    async def _persist_partial_resume(self) -> None:
        """An interrupt while answers were being turned into results: every answered call gets its
        result or an "interrupted" one, so the actions are done and the history stays valid."""
        state, self.resuming = self.resuming, None
        assert state is not None
        results = [
            state.results.get(a.tool_call_id)
            or ToolResultPart(tool_call_id=a.tool_call_id, tool_name=a.tool_name, result={"error": INTERRUPTED_TOOL_RESULT}, is_error=True)
            for a in state.actions
        ]
        try:
            await _uncancellable(self.sink.persist_step(self._resumed_step(results, state.actions)))
        except Interrupted:
            return
        except Exception:
            log.exception("persisting the interrupted results failed")

    # ---------------------------------------------------------------------------- model call

    def _params(self) -> ModelRequestParameters:
        return ModelRequestParameters(function_tools=list(self.tool_defs), native_tools=list(self.model.native_tools))

    async def _call_model(self, history: list[pm.ModelMessage]) -> pm.ModelResponse:
        attempt = 0
        while True:
            try:
                with self._model_span(history, "step") as span:
                    try:
                        response = await self._stream_once(history)
                    except Exception as exc:
                        tracing.fail(span, classify(exc).kind, str(exc))
                        raise
                    self._record_response(span, response)
                    return response
            except Exception as exc:
                if self.state is not None:
                    # The retry starts the step over; the sink clears its part buffer in on_retry.
                    self.state.stream = None
                    self.state.retrying = True
                decision = classify(exc)
                attempt += 1
                metrics.PROVIDER_ERRORS.labels(decision.kind).inc()
                if not decision.retryable:
                    raise ModelCallFailed(describe(decision), decision, attempt) from exc
                if attempt >= self.options.max_attempts:
                    raise RetriesExhausted(
                        f"{describe(decision)} (gave up after {attempt} attempts)", decision, attempt
                    ) from exc
                delay = backoff_delay(attempt - 1, decision.retry_after_s, self.options.jitter())
                metrics.PROVIDER_RETRIES.labels(decision.kind).inc()
                log.info("model call failed (%s), retry %d in %.1fs", decision.kind, attempt, delay)
                await self.sink.on_retry(attempt, delay, decision)
                await self.options.sleep(delay)

    def _model_span(self, history: list[pm.ModelMessage], purpose: str) -> contextlib.AbstractContextManager[tracing.Span]:
        spec = self.model.spec
        attrs = tracing.model_call_attributes(
            self.model.provider_kind, spec.model, conversation_id=self.options.chat_id, provider_name=self.model.otel_provider
        )
        attrs["chatd.model_call.purpose"] = purpose
        if self.state is not None:
            attrs["chatd.step.index"] = self.state.index
        span = tracing.span(f"chat {spec.model}", attrs, kind=tracing.SpanKind.CLIENT)
        if tracing.capture_content():
            return _with_content(span, "gen_ai.input.messages", lambda: pm.ModelMessagesTypeAdapter.dump_python(history, mode="json"))
        return span

    def _record_response(self, span: tracing.Span, response: pm.ModelResponse) -> None:
        tracing.record_response(
            span, response_model=response.model_name, response_id=response.provider_response_id,
            finish_reason=response.finish_reason, input_tokens=response.usage.input_tokens,
            output_tokens=response.usage.output_tokens,
        )
        if tracing.capture_content():
            tracing.set_content(span, "gen_ai.output.messages", pm.ModelMessagesTypeAdapter.dump_python([response], mode="json"))

    async def _stream_once(self, history: list[pm.ModelMessage]) -> pm.ModelResponse:
        loop = asyncio.get_running_loop()
        stall = self.options.stall_timeout
        # One deadline that covers connecting, the first byte and every gap between chunks, but
        # never a long answer that keeps streaming. It is armed `slack` past the stall timeout and
        # pushed forward only once it comes nearer than that, not on every event (a timer
        # cancelled and scheduled again per event was ~1-2% of the CPU at 100 chats): a stream
        # silent for `stall` seconds fails after at most `stall + slack`, and never sooner.
        slack = stall / 8
        deadline = asyncio.timeout(stall + slack)
        sent = loop.time()
        publish = self.sink.publish_part
        try:
            async with deadline, open_stream(self.model, history, self._params(), fast=self.options.fast_streams) as stream:
                if self.state is not None:
                    self.state.stream = stream
                first = True
                async for parts in stream:
                    now = loop.time()
                    if (when := deadline.when()) is None or when - now < stall:
                        deadline.reschedule(now + stall + slack)
                    if first:
                        first = False
                        ttft = metrics.TIME_TO_FIRST_TOKEN.labels(self.model.provider_kind, self.model.spec.model)
                        ttft.observe(now - sent)
                    for role, part in parts:
                        await publish(role, part)
                response = stream.get()
        except TimeoutError as exc:
            if deadline.expired():
                raise StallTimeout(stall) from exc
            raise
        if response.finish_reason is None:
            # Both SDKs end quietly when the connection closes before the terminal event; a
            # response without a finish reason is a cut-off answer, not a short one.
            raise TruncatedStream("the model stream ended without a finish reason")
        return response

    # --------------------------------------------------------------------------------- tools

    async def _run_tools(self, calls: list[pm.ToolCallPart]) -> tuple[list[ToolResultPart], list[NewAction]]:
        """Run the step's calls; a call whose tool asks for an answer first (`action_for`) is not
        run and comes back as a `NewAction`."""
        assert self.state is not None
        results = self.state.results
        asks: dict[str, NewAction] = {}

        async def run_one(call: pm.ToolCallPart) -> None:
            started = time.monotonic()
            done = await self._execute(call)
            if isinstance(done, NewAction):
                asks[call.tool_call_id] = done
            else:
                results[call.tool_call_id] = done.model_copy(update={"duration_ms": round((time.monotonic() - started) * 1000)})

        async with asyncio.TaskGroup() as group:
            for call in calls:
                group.create_task(run_one(call), name=f"tool:{call.tool_name}:{call.tool_call_id}")
        ordered = [results[c.tool_call_id] for c in calls if c.tool_call_id in results]
        # Published after the whole batch, in call order, as the reference does.
        for result in ordered:
            await self.sink.publish_part(Role.TOOL, result)
        return ordered, [asks[c.tool_call_id] for c in calls if c.tool_call_id in asks]

    async def _execute(self, call: pm.ToolCallPart, *, ask: bool = True, resume: Resumption | None = None) -> ToolResultPart | NewAction:
        def error(message: str) -> ToolResultPart:
            return ToolResultPart(
                tool_call_id=call.tool_call_id, tool_name=call.tool_name, result={"error": message}, is_error=True
            )

        tool = self.tools.get(call.tool_name)
        if tool is None:
            explain = self.options.explain_missing_tool
            return error((explain(call.tool_name) if explain else None) or f"Tool not found: {call.tool_name}")
        args, invalid = call_args(call)
        if invalid is not None:
            return error(invalid)
        action_for = getattr(tool, "action_for", None) if ask else None
        if action_for is not None and (request := action_for(args)) is not None:
            return NewAction(call.tool_call_id, call.tool_name, args, request)
        asker = self.options.ask
        ctx = ToolContext(
            chat_id=self.options.chat_id,
            owner_id=self.options.owner_id,
            tool_call_id=call.tool_call_id,
            emit=self._emit,
            ask=(lambda request: asker(call.tool_call_id, call.tool_name, args, request)) if asker is not None else None,
            # Any turn can stop for an answer and be resumed from its persisted step.
            suspend=True,
            resume=resume,
        )
        lock = self._lock_for(tool, args)
        attrs = tracing.tool_attributes(
            call.tool_name, call.tool_call_id, mcp_server=getattr(tool, "server_slug", None), mcp_tool=getattr(tool, "original_name", None)
        )
        try:
            with tracing.span(f"execute_tool {call.tool_name}", attrs) as span:
                tracing.set_content(span, "gen_ai.tool.call.arguments", args)
                async with lock if lock is not None else contextlib.nullcontext():
                    result: ToolResult = await tool.call(args, ctx)
                if result.ask is not None:
                    # The call ended by asking a person: its answer resumes it (`_answer`).
                    return NewAction(call.tool_call_id, call.tool_name, args, result.ask)
                outputs = self.options.tool_outputs
                if outputs is not None and not getattr(tool, "keeps_output", False):
                    result = await outputs.spill(call.tool_name, result)
                    if spilled_file(result.result):
                        self.offer_reader()
                tracing.set_content(span, "gen_ai.tool.call.result", result.result)
                if result.is_error:
                    tracing.fail(span, "tool_error")
        except Exception as exc:
            # One failing tool must not fail the turn: the model sees the error and can react.
            log.warning("tool %s failed", call.tool_name, exc_info=True)
            return error(str(exc) or type(exc).__name__)
        return ToolResultPart(
            tool_call_id=call.tool_call_id, tool_name=call.tool_name, result=result.result, is_error=result.is_error,
            app=result.app,
        )

    async def _emit(self, part: Part) -> None:
        await self.sink.publish_part(Role.TOOL, part)

    def _lock_for(self, tool: Tool, args: dict[str, Any]) -> asyncio.Lock | None:
        """Calls that touch the same key (e.g. a file path) run one at a time, in call order.

        A tool opts in with a `concurrency_key(args) -> str | None` method; tasks are created in
        call order and asyncio locks are FIFO, so same-key calls keep the model's order.
        """
        key_fn = getattr(tool, "concurrency_key", None)
        if key_fn is None:
            return None
        key = key_fn(args)
        if key is None:
            return None
        return self._locks.setdefault(f"{tool.name}\0{key}", asyncio.Lock())

    # ---------------------------------------------------------------------------- compaction

    def _estimate(self, history: list[pm.ModelMessage]) -> int:
        if self._known_context is not None:
            known, upto = self._known_context
            return known + estimate_tokens(history[upto:])
        tools = sum(len(d.name) + len(d.description or "") + len(str(d.parameters_json_schema)) for d in self.tool_defs)
        return estimate_tokens(history) + tools // 4

    def _should_compact(self, tokens: int) -> bool:
        threshold = self.model.spec.compression_threshold
        limit = self.model.spec.context_limit
        return 0 < threshold <= 100 and limit > 0 and tokens * 100 >= threshold * limit

    async def _compact_if_needed(
        self, history: list[pm.ModelMessage], tokens: int, *, before_step: bool
    ) -> list[pm.ModelMessage]:
        if self._compacted_since_step or not self._should_compact(tokens):
            return history
        system = _leading_system(history)
        if len(history) - len(system) < 2:
            return history  # nothing worth summarising
        self._compacted_since_step = True
        attrs = {"chatd.compaction.context_tokens": tokens, "chatd.compaction.before_step": before_step}
        with tracing.span("chatd.compaction", attrs):
            return await self._compact(history, system, tokens)

    async def _compact(
        self, history: list[pm.ModelMessage], system: list[pm.ModelMessage], tokens: int
    ) -> list[pm.ModelMessage]:
        spec = self.model.spec
        call_id = f"{SUMMARY_TOOL_NAME}_{uuid.uuid4().hex}"
        threshold = spec.compression_threshold
        call = ToolCallPart(
            tool_call_id=call_id, tool_name=SUMMARY_TOOL_NAME, args={"source": "automatic", "threshold_percent": threshold}
        )
        await self.sink.publish_part(Role.ASSISTANT, call)
        settings: ModelSettings = {**self.model.settings, "tool_choice": "none"}
        request = [*history, pm.ModelRequest.user_text_prompt(SUMMARY_PROMPT)]
        try:
            with self._model_span(request, "compaction") as span:
                async with asyncio.timeout(self.options.compaction_timeout):
                    response = await model_request(
                        self.model.model,
                        request,
                        model_settings=settings,
                        # Tools stay declared: Anthropic rejects tool_use blocks in history without them.
                        model_request_parameters=ModelRequestParameters(function_tools=list(self.tool_defs)),
                    )
                self._record_response(span, response)
            summary = " ".join(
                p.content.strip() for p in response.parts if isinstance(p, pm.TextPart) and p.content.strip()
            )
            if not summary:
                raise ValueError("compaction produced an empty summary")
        except Exception as exc:
            # The turn goes on uncompacted; the next step may still fit, or fail readably.
            log.warning("generate summary text failed", exc_info=True)
            await self.sink.publish_part(
                Role.TOOL,
                ToolResultPart(
                    tool_call_id=call_id,
                    tool_name=SUMMARY_TOOL_NAME,
                    result={"error": f"generate summary text: {exc}"},
                    is_error=True,
                ),
            )
            return history
        limit = spec.context_limit
        usage_percent = round(tokens * 100 / limit, 1) if limit else 0.0
        result = ToolResultPart(
            tool_call_id=call_id,
            tool_name=SUMMARY_TOOL_NAME,
            result={
                "summary": summary,
                "source": "automatic",
                "threshold_percent": threshold,
                "usage_percent": usage_percent,
                "context_tokens": tokens,
                "context_limit_tokens": limit,
            },
        )
        summary_text = f"{SUMMARY_PREFIX}\n\n{summary}"
        usage = usage_from_pydantic(response.usage)
        compaction = Compaction(
            summary=summary,
            summary_prompt_text=summary_text,
            tool_call_id=call_id,
            call=call,
            result=result,
            threshold_percent=threshold,
            usage_percent=usage_percent,
            context_tokens=tokens,
            context_limit=limit,
            usage=usage,
            cost_micros=cost_micros(usage, spec.pricing),
        )
        with tracing.span("chatd.persist_compaction"):
            await _uncancellable(self.sink.persist_compaction(compaction))
        await self.sink.publish_part(Role.TOOL, result)
        self.compactions += 1
        self._known_context = None
        return [*system, pm.ModelRequest(parts=[pm.UserPromptPart(summary_text)])]


@contextlib.contextmanager
def _with_content(span: contextlib.AbstractContextManager[tracing.Span], key: str, value: Callable[[], Any]) -> Iterator[tracing.Span]:
    with span as current:
        tracing.set_content(current, key, value())
        yield current


def _leading_system(history: list[pm.ModelMessage]) -> list[pm.ModelMessage]:
    out: list[pm.ModelMessage] = []
    for message in history:
        if isinstance(message, pm.ModelRequest) and message.parts and all(
            isinstance(p, pm.SystemPromptPart) for p in message.parts
        ):
            out.append(message)
        else:
            break
    return out


def _append_results(history: list[pm.ModelMessage], returns: list[pm.ToolReturnPart]) -> None:
    """Results of one call batch belong in one request (Anthropic wants them together): a resumed
    turn's results join those the step saved before it waited."""
    last = history[-1] if history else None
    if isinstance(last, pm.ModelRequest) and last.parts and all(isinstance(p, pm.ToolReturnPart) for p in last.parts):
        history[-1] = pm.ModelRequest(parts=[*last.parts, *returns])
    else:
        history.append(pm.ModelRequest(parts=returns))
