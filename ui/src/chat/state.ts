// A chat's live state, folded from its stream events (pure, unit-tested). The stream's snapshot
// (status, buffered parts, messages after the cursor, queue) and its live events go through the
// same reducer, so a reload, a reconnect and a live turn all end in the same state.

import type { ActionKind, ChatAction, ChatStatus, Message, NoticePart, Part, PendingAction, QueuedMessage, StreamEvent, ToolResultPart } from "../api/types";

/** How a call that asked was answered (its action's decision). */
export interface Outcome { kind: ActionKind; decision: string; editedArgs?: Record<string, unknown> | null }

/** An action's outcome as recorded, by action id: the call it belongs to is found at render time
 * (`callCards`), from its tool call id and when it was asked — some providers reuse call ids across
 * steps (`call_1` every step), so the id alone does not say which call's card it is. */
export interface RecordedOutcome extends Outcome { tool_call_id: string; created_at: string }

export interface Retry { attempt: number; error: string; retryingAt: string }

export interface ChatState {
  status: ChatStatus | null;
  /** Persisted messages, by ascending id. */
  messages: Message[];
  /** Parts of the step being streamed (not persisted yet), merged from deltas. */
  live: Part[];
  queue: QueuedMessage[];
  /** Streamed-only notices of the current turn (an MCP server unavailable, ...). */
  notices: NoticePart[];
  retry: Retry | null;
  error: string | null;
  /** A message re-sent below the newest one known: the history changed (an edit), reload it. */
  needsReload: boolean;
  /** What the chat waits for while `requires_action` (announced by `action_required`). */
  actions: PendingAction[];
  /** How each action was answered, by action id: from the chat's actions (`GET /chats/{id}/actions`,
   * after a reload) and from `action_resolved` as it happens. `callCards` puts them on cards. */
  outcomes: Record<string, RecordedOutcome>;
  /** Every action this page was shown, by id: its end may be announced after the status change
   * that already took it off `actions` (the chat resumed), and its call's card still needs it. */
  asked: Record<string, { kind: ActionKind; tool_call_id: string; created_at: string }>;
}

export const emptyChat: ChatState = {
  status: null, messages: [], live: [], queue: [], notices: [], retry: null, error: null, needsReload: false, actions: [], outcomes: {}, asked: {},
};

/** Appends one streamed part to the parts in flight: text and reasoning deltas join the previous
 * part of their kind, a tool call's argument deltas join the call, a result replaces none. */
export function mergePart(live: Part[], part: Part): Part[] {
  const last = live[live.length - 1];
  switch (part.type) {
    case "text":
    case "reasoning":
      if (last && last.type === part.type) {
        return [...live.slice(0, -1), { ...last, text: last.text + part.text }];
      }
      return [...live, part];
    case "tool-call": {
      const i = live.findIndex((p) => p.type === "tool-call" && p.tool_call_id === part.tool_call_id);
      if (i < 0) return [...live, { ...part, args_delta: part.args_delta ?? null }];
      const prev = live[i] as typeof part;
      const next = part.args_delta != null
        ? { ...prev, args_delta: (prev.args_delta ?? "") + part.args_delta }
        : { ...prev, ...part, args_delta: null };
      return live.map((p, j) => (j === i ? next : p));
    }
    case "tool-result":
    case "tool-progress": {
      const i = live.findIndex((p) => p.type === part.type && p.tool_call_id === part.tool_call_id);
      return i < 0 ? [...live, part] : live.map((p, j) => (j === i ? part : p));
    }
    default:
      return [...live, part];
  }
}

function insertMessage(messages: Message[], m: Message): Message[] {
  const i = messages.findIndex((x) => x.id >= m.id);
  if (i < 0) return [...messages, m];
  if (messages[i].id === m.id) return messages.map((x, j) => (j === i ? m : x));
  return [...messages.slice(0, i), m, ...messages.slice(i)];
}

export function reduce(s: ChatState, ev: StreamEvent): ChatState {
  switch (ev.type) {
    case "status": {
      const idle = ev.status === "waiting" || ev.status === "error" || ev.status === "requires_action";
      return {
        ...s,
        status: ev.status,
        live: idle ? [] : s.live,
        retry: ev.status === "running" ? s.retry : null,
        error: ev.status === "error" ? s.error : null,
        // A waiting chat has actions, and so may a running one (a call asks the user: an MCP
        // server's elicitation); any other status means they were answered or ended.
        actions: ev.status === "requires_action" || ev.status === "running" ? s.actions : [],
      };
    }
    case "action_required": {
      if (s.actions.some((a) => a.id === ev.action.id)) return s;
      const { kind, tool_call_id, created_at } = ev.action;
      const asked = { ...s.asked, [ev.action.id]: { kind, tool_call_id, created_at } };
      return { ...s, actions: [...s.actions, ev.action], asked };
    }
    case "action_resolved": {
      const gone = s.actions.find((a) => a.id === ev.action_id) ?? s.asked[ev.action_id];
      const actions = s.actions.filter((a) => a.id !== ev.action_id);
      if (!gone) return { ...s, actions };
      const outcome: RecordedOutcome = {
        kind: gone.kind, decision: ev.decision, editedArgs: ev.edited_args ?? null, tool_call_id: gone.tool_call_id, created_at: gone.created_at,
      };
      return { ...s, actions, outcomes: { ...s.outcomes, [ev.action_id]: outcome } };
    }
    case "message_part":
      if (ev.part.type === "notice") return { ...s, notices: [...s.notices, ev.part] };
      return { ...s, live: mergePart(s.live, ev.part) };
    case "message": {
      const m = ev.message;
      const newest = s.messages.length ? s.messages[s.messages.length - 1].id : 0;
      const known = s.messages.some((x) => x.id === m.id);
      const next: ChatState = { ...s, messages: insertMessage(s.messages, m), retry: null };
      if (!known && m.id < newest) next.needsReload = true;
      // A newly persisted step replaces the parts that streamed it (an older answer sent again
      // does not: the parts in flight continue the history); a new user message starts a turn.
      if ((m.role === "assistant" || m.role === "tool") && m.id > newest) next.live = [];
      if (m.role === "user" && m.id > newest) next.notices = [];
      return next;
    }
    case "queue_update":
      return { ...s, queue: ev.queued_messages };
    case "retry":
      return { ...s, live: [], retry: { attempt: ev.attempt, error: ev.error, retryingAt: ev.retrying_at } };
    case "error":
      return { ...s, error: ev.message };
    default:
      return s;
  }
}

/** The chat's actions as the API lists them: each resolved one's decision (and edited arguments)
 * for its call's card. What this page saw happen live is kept over an older read. */
export function withOutcomes(s: ChatState, actions: ChatAction[]): ChatState {
  const outcomes: Record<string, RecordedOutcome> = {};
  for (const a of actions) {
    if (a.decision) {
      outcomes[a.id] = { kind: a.kind, decision: a.decision, editedArgs: a.edited_args, tool_call_id: a.tool_call_id, created_at: a.created_at };
    }
  }
  return { ...s, outcomes: { ...outcomes, ...s.outcomes } };
}

/** A call's card: the message that holds the call (`live`: the step streaming now) and its id. */
export function cardKey(owner: number | "live", toolCallId: string): string {
  return `${owner}:${toolCallId}`;
}

/** An API time (`2026-11-30T11:01:06.123456Z`, fraction optional) in microseconds, NaN if none. */
export function micros(at: string | null | undefined): number {
  const m = /^(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(.*)$/.exec(at ?? "");
  if (!m) return NaN;
  return Date.parse(m[1] + m[3]) * 1000 + Number((m[2] ?? "").padEnd(6, "0").slice(0, 6));
}

/** What each call's card shows, by card key (`cardKey`). */
export interface CallCards {
  results: Map<string, ToolResultPart>;
  /** Results with no call before them (their call is not in the history). */
  orphans: Set<ToolResultPart>;
  awaiting: Set<string>;
  outcomes: Map<string, Outcome>;
  durations: Map<string, number>;
}

/** Puts results, waits, outcomes and measured durations on the right call's card. Call ids are not
 * unique in a chat (some providers reuse `call_1` every step), so each belongs to one occurrence:
 * - a result to the newest call with its id before it (messages by id, then the parts in flight);
 * - a wait (a pending action) to the newest call with its id;
 * - an outcome to the newest call with its id whose message is no newer than the action (an action
 *   is written with its step; one asked again while the call runs is later), else the newest call;
 *   of several outcomes on one card, the newest action's;
 * - durations measured on the page (per id, oldest first) to the newest calls with a result. */
export function callCards(
  messages: Message[],
  live: Part[],
  waiting: { tool_call_id: string }[],
  outcomes: Record<string, RecordedOutcome>,
  measured: Map<string, number[]> = new Map(),
): CallCards {
  const calls = new Map<string, { key: string; at: number }[]>();
  const results = new Map<string, ToolResultPart>();
  const orphans = new Set<ToolResultPart>();
  const walk = (owner: number | "live", at: number, parts: Part[]) => {
    for (const p of parts) {
      if (p.type === "tool-call") {
        const list = calls.get(p.tool_call_id) ?? [];
        const key = cardKey(owner, p.tool_call_id);
        if (list[list.length - 1]?.key !== key) list.push({ key, at });
        calls.set(p.tool_call_id, list);
      } else if (p.type === "tool-result") {
        const list = calls.get(p.tool_call_id);
        if (list) results.set(list[list.length - 1].key, p);
        else orphans.add(p);
      }
    }
  };
  for (const m of [...messages].sort((a, b) => a.id - b.id)) walk(m.id, micros(m.created_at), m.content);
  // The step streaming now is newer than any action asked so far.
  walk("live", Infinity, live);
  const newest = (id: string) => calls.get(id)?.at(-1)?.key;
  const awaiting = new Set<string>();
  for (const a of waiting) {
    const key = newest(a.tool_call_id);
    if (key) awaiting.add(key);
  }
  const byCard = new Map<string, { outcome: Outcome; at: number }>();
  for (const o of Object.values(outcomes)) {
    const list = calls.get(o.tool_call_id);
    if (!list) continue;
    const at = micros(o.created_at);
    const key = [...list].reverse().find((c) => c.at <= at)?.key ?? list[list.length - 1].key;
    const had = byCard.get(key);
    // The newest action wins; of two at the same time (or without times), the one recorded last.
    if (!had || !(had.at > at)) byCard.set(key, { outcome: { kind: o.kind, decision: o.decision, editedArgs: o.editedArgs }, at });
  }
  const durations = new Map<string, number>();
  for (const [id, times] of measured) {
    const done = (calls.get(id) ?? []).filter((c) => results.has(c.key));
    for (let i = 1; i <= Math.min(times.length, done.length); i++) durations.set(done[done.length - i].key, times[times.length - i]);
  }
  return { results, orphans, awaiting, outcomes: new Map([...byCard].map(([k, v]) => [k, v.outcome])), durations };
}

export interface CallState {
  /** The card's badge: done, failed, denied, declined, cancelled, timed out, ... */
  label: string;
  /** The tool ran (a duration means something). A denied or unanswered call did not. */
  ran: boolean;
  /** What happened, in words, when it is not the tool's own result. */
  note: string | null;
}

const NOT_RUN: Record<string, Record<string, [string, string]>> = {
  tool_approval: {
    deny: ["denied", "You denied this call: it did not run."],
    cancel: ["cancelled", "Cancelled before it was approved (the chat moved on): it did not run."],
  },
  question: {
    decline: ["declined", "You declined to answer."],
    cancel: ["cancelled", "The question was cancelled without an answer."],
  },
  client_tool: {
    decline: ["declined", "The client declined to run it."],
    cancel: ["cancelled", "Cancelled before the client answered: it did not run."],
    timeout: ["timed out", "The client did not answer before the deadline."],
  },
};

/** What a tool call's card says about it: its result, or how the person answered instead. */
export function callState(
  result: { is_error?: boolean; result?: unknown } | null,
  outcome: Outcome | null | undefined,
  opts: { awaiting?: boolean; live?: boolean } = {},
): CallState {
  // Answers that are not a run (denied, declined, ...): never a failure, never a run time.
  // Without the action (an older server), a result that says its decision is read the same way.
  const said = result?.result && typeof result.result === "object" ? (result.result as { decision?: unknown }).decision : undefined;
  const kind = outcome?.kind ?? (typeof said === "string" ? "question" : undefined);
  const decision = outcome?.decision ?? (typeof said === "string" ? said : undefined);
  const notRun = kind && decision ? NOT_RUN[kind]?.[decision] : undefined;
  if (notRun && (result || !opts.awaiting)) return { label: notRun[0], ran: false, note: notRun[1] };
  if (outcome?.kind === "elicitation" && outcome.decision === "timeout") {
    const note = "Nobody answered the server's form in time: it was cancelled.";
    if (!result) return { label: "not answered in time", ran: false, note };
    return { label: result.is_error ? "failed" : "not answered in time", ran: true, note };
  }
  if (result) {
    const note = outcome?.kind === "elicitation" && (outcome.decision === "decline" || outcome.decision === "cancel")
      ? `You ${outcome.decision === "decline" ? "declined" : "cancelled"} the server's form.` : null;
    return { label: result.is_error ? "failed" : "done", ran: true, note };
  }
  if (opts.awaiting) return { label: "waiting for your answer", ran: false, note: null };
  // Answered, but the step waits for its other questions: the call goes on once all are answered.
  if (outcome?.decision === "approve") {
    return { label: "approved", ran: false, note: "It runs once every question of this step is answered." };
  }
  if (outcome?.decision === "accept" && outcome.kind === "elicitation") {
    return { label: "answered", ran: false, note: "The server gets your answer once every question of this step is answered." };
  }
  return { label: opts.live ? "running" : "no result", ran: false, note: null };
}

/** The arguments a call ran with when the person edited them before approving, else null. */
export function editedArgs(result: { result?: unknown } | null, outcome: Outcome | null | undefined): Record<string, unknown> | null {
  const r = result?.result;
  if (r && typeof r === "object" && !Array.isArray(r) && "edited_args" in r) {
    const e = (r as { edited_args?: unknown }).edited_args;
    if (e && typeof e === "object" && !Array.isArray(e)) return e as Record<string, unknown>;
  }
  return outcome?.decision === "approve" && outcome.editedArgs ? outcome.editedArgs : null;
}

/** A (re)connection: the server re-sends the status, the buffered parts and the queue. */
export function reconnected(s: ChatState): ChatState {
  // The new snapshot announces the actions still waiting.
  return { ...s, live: [], actions: [] };
}

/** Replace the history (after an edit) with what the API lists. Messages the stream delivered
 * while the list was on its way (ids above the list's newest: ids only grow) are kept — the
 * answer to an edit can be persisted and streamed before the re-read arrives. */
export function withHistory(s: ChatState, messages: Message[], queue: QueuedMessage[]): ChatState {
  const newest = messages.reduce((max, m) => Math.max(max, m.id), 0);
  const later = s.messages.filter((m) => m.id > newest);
  return { ...s, messages: [...messages, ...later].sort((a, b) => a.id - b.id), queue, needsReload: false };
}

export interface Turn {
  /** The user message that started it (absent for a chat whose history starts elsewhere). */
  user: Message | null;
  /** Assistant and tool messages of the answer. */
  replies: Message[];
}

/** Messages grouped as the user reads them: each user message and the answer that follows. */
export function turns(messages: Message[]): Turn[] {
  const out: Turn[] = [];
  for (const m of messages) {
    if (m.role === "system") continue;
    if (m.role === "user") out.push({ user: m, replies: [] });
    else if (out.length) out[out.length - 1].replies.push(m);
    else out.push({ user: null, replies: [m] });
  }
  return out;
}

export interface Totals { tokens: number; costMicros: number; runtimeMs: number; priced: boolean }

export function totals(messages: Message[]): Totals {
  let tokens = 0, costMicros = 0, runtimeMs = 0, priced = false;
  for (const m of messages) {
    if (m.usage) tokens += m.usage.total_tokens || m.usage.input_tokens + m.usage.output_tokens;
    if (m.total_cost_micros != null) { costMicros += m.total_cost_micros; priced = true; }
    if (m.runtime_ms != null) runtimeMs += m.runtime_ms;
  }
  return { tokens, costMicros, runtimeMs, priced };
}

export function formatCost(micros: number): string {
  if (micros > 0 && micros < 100) return "<$0.0001";
  const dollars = micros / 1_000_000;
  if (dollars === 0) return "$0";
  if (dollars < 0.01) return `$${dollars.toFixed(4)}`;
  return `$${dollars.toFixed(2)}`;
}

/** `slug__tool` (MCP) → server slug and tool; built-in tools have no server. */
export function splitToolName(name: string): { server: string | null; tool: string } {
  const i = name.indexOf("__");
  return i > 0 ? { server: name.slice(0, i), tool: name.slice(i + 2) } : { server: null, tool: name };
}
