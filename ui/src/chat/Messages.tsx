// The history as turns (a user message and its answer) plus the parts streaming right now.

import type { Message, Part, ToolProgressPart, ToolResultPart } from "../api/types";
import { FileView } from "./FileView";
import { Markdown } from "./Markdown";
import { callCards, cardKey, formatCost, totals, turns, type CallCards, type RecordedOutcome, type Totals } from "./state";
import { ToolCard } from "./ToolCard";

export function textOf(parts: Part[]): string {
  return parts.map((p) => (p.type === "text" ? p.text : "")).join("");
}

function TotalsLine({ t, label, stopped = false }: { t: Totals; label: string; stopped?: boolean }) {
  if (!t.tokens && !t.costMicros && !t.runtimeMs && !stopped) return null;
  const bits: string[] = [];
  if (stopped) bits.push("stopped");
  // A message without usage (an answer stopped mid-stream) has no token count: not "0 tokens".
  if (t.tokens) bits.push(`${t.tokens.toLocaleString()} tokens`);
  if (t.priced && (t.tokens || t.costMicros)) bits.push(formatCost(t.costMicros));
  if (t.runtimeMs) bits.push(`${(t.runtimeMs / 1000).toFixed(1)} s`);
  return <p class="totals muted" aria-label={label}>{bits.join(" · ")}</p>;
}

/** An answer that ended without usage and without an error notice was stopped (interrupted) mid-stream. */
function stoppedAnswer(replies: Message[], running: boolean): boolean {
  if (running) return false;
  const answers = replies.filter((m) => m.role === "assistant");
  const lastAnswer = answers[answers.length - 1];
  // Stopped mid-stream, the provider never reported usage: the message has none, or all zeros.
  const u = lastAnswer?.usage;
  if (!lastAnswer || (u && (u.total_tokens || u.input_tokens + u.output_tokens))) return false;
  return !replies.some((m) => m.content.some((p) => p.type === "notice" && p.level === "error"));
}

interface PartsProps {
  parts: Part[];
  /** The message that holds the parts (`live`: the step streaming now): with a call's id, its card. */
  owner: number | "live";
  cards: CallCards;
  progress?: Map<string, ToolProgressPart>;
  live: boolean;
}

/** An assistant message's parts in order; tool calls as cards with their results. */
export function Parts({ parts, owner, cards, progress, live }: PartsProps) {
  return (
    <>
      {parts.map((p, i) => {
        switch (p.type) {
          case "text":
            return p.text ? <Markdown key={i} text={p.text} /> : null;
          case "reasoning":
            return (
              <details key={i} class="reasoning">
                <summary>Reasoning</summary>
                <Markdown text={p.text} />
              </details>
            );
          case "tool-call": {
            const key = cardKey(owner, p.tool_call_id);
            const r = cards.results.get(key) ?? null;
            const outcome = cards.outcomes.get(key);
            // The server's own measure first: one taken on this page from the call to its result
            // would count the time the call waited for its person.
            const d = r?.duration_ms ?? (outcome ? null : cards.durations.get(key)) ?? null;
            return <ToolCard key={p.tool_call_id} call={p} result={r} progress={progress?.get(p.tool_call_id)} durationMs={d} live={live} awaiting={cards.awaiting.has(key)} outcome={outcome} />;
          }
          case "file":
            return <FileView key={i} fileId={p.file_id} mediaType={p.media_type} name={p.name} />;
          case "source":
            return (
              <p key={i} class="source">
                Source: <a href={p.url} target="_blank" rel="noopener noreferrer nofollow">{p.title || p.url}</a>
              </p>
            );
          case "notice":
            return <p key={i} class={`notice notice-${p.level}`} role="note">{p.text}</p>;
          default:
            return null;
        }
      })}
    </>
  );
}

interface Props {
  messages: Message[];
  live: Part[];
  running: boolean;
  /** Run times measured on this page, per tool call id (oldest first): see `callCards`. */
  durations: Map<string, number[]>;
  onEdit: (m: Message) => void;
  editing: number | null;
  renderEditor: (m: Message) => preact.ComponentChildren;
  canEdit: boolean;
  /** What the chat waits for (its pending actions): their calls' cards say so. */
  waiting?: { tool_call_id: string }[];
  /** How each action was answered (denied, edited, nobody answered in time, ...), by action id. */
  outcomes?: Record<string, RecordedOutcome>;
}

export function Messages({ messages, live, running, durations, onEdit, editing, renderEditor, canEdit, waiting = [], outcomes = {} }: Props) {
  // Each call's card by message and call id: call ids repeat across steps with some providers.
  const cards = callCards(messages, live, waiting, outcomes, durations);
  const progress = new Map<string, ToolProgressPart>();
  for (const p of live) {
    if (p.type === "tool-progress") progress.set(p.tool_call_id, p);
  }
  const ts = turns(messages);
  const lastIndex = ts.length - 1;
  return (
    <ol class="messages" aria-label="Messages">
      {ts.map((t, i) => {
        const orphanResults = t.replies.flatMap((m) =>
          m.content.filter((p): p is ToolResultPart => p.type === "tool-result" && cards.orphans.has(p)),
        );
        const last = i === lastIndex;
        return (
          <li key={t.user?.id ?? `t${i}`} class="turn">
            {t.user && (
              <div class="msg user" aria-label="You">
                {editing === t.user.id ? (
                  renderEditor(t.user)
                ) : (
                  <>
                    <div class="bubble">
                      <Markdown text={textOf(t.user.content)} />
                      {t.user.content.filter((p) => p.type === "file").map((p) =>
                        p.type === "file" ? <FileView key={p.file_id} fileId={p.file_id} mediaType={p.media_type} name={p.name} /> : null,
                      )}
                    </div>
                    {canEdit && (
                      <button type="button" class="link" onClick={() => onEdit(t.user!)} aria-label="Edit this message">Edit</button>
                    )}
                  </>
                )}
              </div>
            )}
            {(t.replies.length > 0 || (last && live.length > 0)) && (
              <div class="msg assistant" aria-label="Answer">
                {t.replies.filter((m) => m.role === "assistant").map((m) => (
                  <Parts key={m.id} parts={m.content} owner={m.id} cards={cards} live={false} />
                ))}
                {orphanResults.map((r) => <ToolCard key={r.tool_call_id} call={null} result={r} live={false} />)}
                {last && live.length > 0 && (
                  <div class="live" aria-busy={running}>
                    <Parts parts={live.filter((p) => p.type !== "tool-result" && p.type !== "tool-progress")} owner="live" cards={cards} progress={progress} live={running} />
                  </div>
                )}
                {t.replies.length > 0 && <TotalsLine t={totals(t.replies)} label="Tokens and cost of this answer" stopped={stoppedAnswer(t.replies, last && running)} />}
              </div>
            )}
          </li>
        );
      })}
    </ol>
  );
}
