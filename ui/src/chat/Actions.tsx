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
      {action.deadline && action.kind === "elicitation" && (
        <p class="muted action-deadline">
          Answer by {new Date(action.deadline).toLocaleTimeString()}: after that the server is told nobody answered.
        </p>
      )}
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

type Field = { name: string; type: string; title: string; description?: string; enum?: string[]; required: boolean; default?: unknown };

/** The fields of a flat form schema (what MCP elicitation allows: primitive properties), or
 * null when the schema is something else (then the answer is typed as JSON). */
function fields(schema: Record<string, unknown> | null): Field[] | null {
  if (!schema || schema.type !== "object" || typeof schema.properties !== "object" || !schema.properties) return null;
  const required = new Set(Array.isArray(schema.required) ? (schema.required as string[]) : []);
  const out: Field[] = [];
  for (const [name, raw] of Object.entries(schema.properties as Record<string, Record<string, unknown>>)) {
    const type = String(raw.type ?? "string");
    if (!["string", "number", "integer", "boolean"].includes(type)) return null;
    out.push({
      name, type, title: String(raw.title ?? name), description: raw.description as string | undefined,
      enum: Array.isArray(raw.enum) ? (raw.enum as string[]) : undefined, required: required.has(name), default: raw.default,
    });
  }
  return out;
}

/** An MCP server's request for input while a call waits: a form from its schema, or a page to
 * open (URL mode); declining and cancelling are answers too. */
function Form({ action, sending, answer }: KindProps) {
  const form = fields(action.schema);
  const [values, setValues] = useState<Record<string, unknown>>(() =>
    Object.fromEntries((form ?? []).filter((f) => f.default !== undefined).map((f) => [f.name, f.default])),
  );
  const [text, setText] = useState("{}");
  const [bad, setBad] = useState<string | null>(null);
  const submit = () => {
    setBad(null);
    if (action.url) {
      void answer({ decision: "accept" });
      return;
    }
    if (form) {
      void answer({ decision: "accept", content: values });
      return;
    }
    try {
      void answer({ decision: "accept", content: JSON.parse(text) as unknown });
    } catch {
      setBad("The answer must be JSON.");
    }
  };
  const set = (f: Field, raw: string | boolean) => {
    const v = typeof raw === "boolean" ? raw : f.type === "number" || f.type === "integer" ? (raw === "" ? undefined : Number(raw)) : raw;
    setValues((old) => ({ ...old, [f.name]: v }));
  };
  return (
    <form class="action-form" onSubmit={(e) => { e.preventDefault(); submit(); }}>
      <p class="action-title"><strong>{action.message ?? `${action.server ?? "A server"} asks for input.`}</strong>
        {action.server && <span class="muted"> ({action.server})</span>}</p>
      {action.url && <p><a href={action.url} target="_blank" rel="noopener noreferrer nofollow">Open {action.url}</a></p>}
      {!action.url && form && form.map((f) => {
        const id = `f-${action.id}-${f.name}`;
        return (
          <div key={f.name} class="action-field">
            {f.type === "boolean" ? (
              <label class="check"><input id={id} type="checkbox" checked={!!values[f.name]} disabled={sending} onChange={(e) => set(f, (e.target as HTMLInputElement).checked)} />{f.title}</label>
            ) : (
              <>
                <label for={id}>{f.title}{f.required ? " *" : ""}</label>
                {f.enum ? (
                  <select id={id} value={String(values[f.name] ?? "")} disabled={sending} onChange={(e) => set(f, (e.target as HTMLSelectElement).value)}>
                    <option value="" disabled>Choose…</option>
                    {f.enum.map((o) => <option key={o} value={o}>{o}</option>)}
                  </select>
                ) : (
                  <input id={id} type={(f.type === "string" ? "text" : "number") as "text"} required={f.required} value={values[f.name] == null ? "" : String(values[f.name])}
                    disabled={sending} onInput={(e) => set(f, (e.target as HTMLInputElement).value)} />
                )}
              </>
            )}
            {f.description && <small class="muted">{f.description}</small>}
          </div>
        );
      })}
      {!action.url && !form && (
        <>
          <label for={`form-${action.id}`}>Answer (JSON)</label>
          <textarea id={`form-${action.id}`} class="json" rows={4} value={text} disabled={sending} onInput={(e) => setText((e.target as HTMLTextAreaElement).value)} />
        </>
      )}
      {bad && <p class="error" role="alert">{bad}</p>}
      <div class="action-buttons">
        <button type="submit" class="primary" disabled={sending}>{action.url ? "Done" : "Send"}</button>
        <button type="button" disabled={sending} onClick={() => answer({ decision: "decline" })}>Decline</button>
        <button type="button" disabled={sending} onClick={() => answer({ decision: "cancel" })}>Cancel</button>
      </div>
    </form>
  );
}
