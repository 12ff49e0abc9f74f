// What a chat in `requires_action` waits for, inline under its messages: a question with its
// suggested answers and a free-text box, a tool call to approve or deny (arguments editable,
// "always allow" for the chat), or a client-side tool the chat's client must answer.

import { useEffect, useState } from "preact/hooks";
import { describe } from "../api/client";
import type { ActionAnswer, PendingAction } from "../api/types";
import { splitToolName } from "./state";

interface Props {
  actions: PendingAction[];
  onAnswer: (action: PendingAction, answer: ActionAnswer) => Promise<void>;
}

export function PendingActions({ actions, onAnswer }: Props) {
  if (!actions.length) return null;
  return (
    <section class="actions" aria-label="Waiting for you">
      {actions.map((a) => <ActionCard key={a.id} action={a} onAnswer={onAnswer} />)}
    </section>
  );
}

function ActionCard({ action, onAnswer }: { action: PendingAction; onAnswer: Props["onAnswer"] }) {
  const [error, setError] = useState<string | null>(null);
  const [sending, setSending] = useState(false);

  const answer = async (a: ActionAnswer) => {
    setSending(true);
    setError(null);
    try {
      await onAnswer(action, a);
    } catch (e) {
      setError(describe(e));
    } finally {
      setSending(false);
    }
  };

  const body = (() => {
    switch (action.kind) {
      case "question":
        return <Question action={action} sending={sending} answer={answer} />;
      case "tool_approval":
        return <Approval action={action} sending={sending} answer={answer} />;
      case "client_tool":
        return <ClientTool action={action} sending={sending} answer={answer} />;
      default:
        return <Form action={action} sending={sending} answer={answer} />;
    }
  })();
  return (
    <article class={`action action-${action.kind}`} aria-label={label(action)}>
      {body}
      <Waited since={action.created_at} />
      {error && <p class="error" role="alert">{error}</p>}
    </article>
  );
}

/** How long ago, in words: "less than a minute", "3 minutes", "2 hours 5 minutes", "3 days". */
export function waitedFor(ms: number): string {
  const minutes = Math.floor(Math.max(0, ms) / 60_000);
  if (minutes < 1) return "less than a minute";
  const plural = (n: number, unit: string) => `${n} ${unit}${n === 1 ? "" : "s"}`;
  if (minutes < 60) return plural(minutes, "minute");
  const hours = Math.floor(minutes / 60);
  if (hours < 24) return minutes % 60 ? `${plural(hours, "hour")} ${plural(minutes % 60, "minute")}` : plural(hours, "hour");
  return plural(Math.floor(hours / 24), "day");
}

/** How long the action has waited for its person, kept current. */
function Waited({ since }: { since: string | undefined }) {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    const t = setInterval(() => setNow(Date.now()), 15_000);
    return () => clearInterval(t);
  }, []);
  const at = since ? Date.parse(since) : NaN;
  if (Number.isNaN(at)) return null;
  return (
    <p class="muted action-waited">
      Waiting for you for <time dateTime={since} title={new Date(at).toLocaleString()}>{waitedFor(now - at)}</time>
    </p>
  );
}

function label(a: PendingAction): string {
  const { tool } = splitToolName(a.tool_name);
  switch (a.kind) {
    case "question": return "Question";
    case "tool_approval": return `Approve ${tool}`;
    case "client_tool": return `Client tool ${tool}`;
    default: return `Input for ${a.server ?? tool}`;
  }
}

interface KindProps { action: PendingAction; sending: boolean; answer: (a: ActionAnswer) => Promise<void> }

function Question({ action, sending, answer }: KindProps) {
  const [text, setText] = useState("");
  const id = `answer-${action.id}`;
  return (
    <>
      <p class="action-title"><strong>{action.message ?? "The agent has a question."}</strong></p>
      <div class="action-options" role="group" aria-label="Suggested answers">
        {(action.options ?? []).map((o) => (
          <button key={o} type="button" disabled={sending} onClick={() => answer({ decision: "accept", content: o })}>{o}</button>
        ))}
      </div>
      <form class="action-free" onSubmit={(e) => { e.preventDefault(); if (text.trim()) void answer({ decision: "accept", content: text }); }}>
        <label for={id}>Your own answer</label>
        <input id={id} type="text" value={text} onInput={(e) => setText((e.target as HTMLInputElement).value)} disabled={sending} />
        <button type="submit" class="primary" disabled={sending || !text.trim()}>Answer</button>
        <button type="button" disabled={sending} onClick={() => answer({ decision: "decline" })}>Decline</button>
      </form>
    </>
  );
}

function Approval({ action, sending, answer }: KindProps) {
  const { server, tool } = splitToolName(action.tool_name);
  const original = JSON.stringify(action.args ?? {}, null, 2);
  const [args, setArgs] = useState(original);
  const [always, setAlways] = useState(false);
  const [bad, setBad] = useState<string | null>(null);
  const id = `args-${action.id}`;

  const approve = () => {
    let edited: Record<string, unknown> | undefined;
    if (args.trim() !== original.trim()) {
      try {
        const parsed: unknown = JSON.parse(args);
        if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) throw new Error("not an object");
        edited = parsed as Record<string, unknown>;
      } catch {
        setBad("The arguments must be a JSON object.");
        return;
      }
    }
    setBad(null);
    void answer({ decision: "approve", args: edited, always_allow: always || undefined });
  };

  return (
    <>
      <p class="action-title">
        <strong>Run <code>{tool}</code>{server || action.server ? <> on {action.server ?? server}</> : null}?</strong>
      </p>
      <label for={id}>Arguments</label>
      <textarea id={id} class="json" rows={Math.min(12, original.split("\n").length + 1)} value={args} disabled={sending}
        onInput={(e) => setArgs((e.target as HTMLTextAreaElement).value)} />
      {bad && <p class="error" role="alert">{bad}</p>}
      <label class="check">
        <input type="checkbox" checked={always} disabled={sending} onChange={(e) => setAlways((e.target as HTMLInputElement).checked)} />
        Always allow {tool} in this chat
      </label>
      <div class="action-buttons">
        <button type="button" class="primary" disabled={sending} onClick={approve}>Approve</button>
        <button type="button" class="danger" disabled={sending} onClick={() => answer({ decision: "deny" })}>Deny</button>
      </div>
    </>
  );
}

function ClientTool({ action, sending, answer }: KindProps) {
  const { tool } = splitToolName(action.tool_name);
  return (
    <>
      <p class="action-title">
        <strong>Waiting for the chat's client to run <code>{tool}</code></strong>
        {action.deadline && <span class="muted"> (until {new Date(action.deadline).toLocaleTimeString()})</span>}
      </p>
      <details>
        <summary>Arguments</summary>
        <pre class="json">{JSON.stringify(action.args ?? {}, null, 2)}</pre>
      </details>
      <div class="action-buttons">
        <button type="button" disabled={sending} onClick={() => answer({ decision: "decline" })}>Don't run it</button>
      </div>
    </>
  );
}

/** An MCP server's request for input: a JSON object matching its schema (or a URL to visit). */
function Form({ action, sending, answer }: KindProps) {
  const [text, setText] = useState("{}");
  const [bad, setBad] = useState<string | null>(null);
  const id = `form-${action.id}`;
  const submit = () => {
    try {
      setBad(null);
      void answer({ decision: "accept", content: JSON.parse(text) as unknown });
    } catch {
      setBad("The answer must be JSON.");
    }
  };
  return (
    <>
      <p class="action-title"><strong>{action.message ?? `${action.server ?? "A server"} asks for input.`}</strong></p>
      {action.url && <p><a href={action.url} target="_blank" rel="noopener noreferrer nofollow">{action.url}</a></p>}
      {action.schema && (
        <details>
          <summary>Requested fields</summary>
          <pre class="json">{JSON.stringify(action.schema, null, 2)}</pre>
        </details>
      )}
      <label for={id}>Answer (JSON)</label>
      <textarea id={id} class="json" rows={4} value={text} disabled={sending} onInput={(e) => setText((e.target as HTMLTextAreaElement).value)} />
      {bad && <p class="error" role="alert">{bad}</p>}
      <div class="action-buttons">
        <button type="button" class="primary" disabled={sending} onClick={submit}>Send</button>
        <button type="button" disabled={sending} onClick={() => answer({ decision: "decline" })}>Decline</button>
        <button type="button" disabled={sending} onClick={() => answer({ decision: "cancel" })}>Cancel</button>
      </div>
    </>
  );
}
