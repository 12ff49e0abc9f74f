// The message box: Enter sends, Shift+Enter is a new line; files are uploaded as they are picked;
// while a turn runs the user picks what the message does (queue, steer, interrupt). What is typed
// is a draft of its chat (kept in the tab's session storage): it survives a reload or a visit to
// another chat, and one chat's draft never shows in another.

import { useEffect, useRef, useState } from "preact/hooks";
import { describe } from "../api/client";
import { uploadFile } from "../api/chats";
import type { ActionKind, BusyBehavior, FilePart, InputPart, PendingAction } from "../api/types";
import { onDraftOffered } from "./drafts";

interface Props {
  busy: boolean;
  /** The chat waits for the person's answer to a pending action (shown above the composer). */
  awaitingAnswer?: boolean;
  /** What it waits for (`requires_action`): the cancel button and the note name it. */
  pending?: PendingAction[];
  /** Messages queued (or steering) behind the running answer: they run when it ends or is stopped. */
  queued?: number;
  /** Where the draft is kept (one per chat); none: the draft lives only as long as the page. */
  draftKey?: string;
  disabled?: boolean;
  disabledReason?: string;
  onSend: (content: InputPart[], behavior: BusyBehavior) => Promise<void>;
  onStop?: () => void;
  placeholder?: string;
  /** A waiting card is out of view (the person scrolled up): a button above the box jumps to it. */
  onJump?: () => void;
}

const BEHAVIORS: { value: BusyBehavior; label: string; hint: string }[] = [
  { value: "queue", label: "Queue", hint: "send after the answer" },
  { value: "steer", label: "Steer", hint: "add to the running answer" },
  { value: "interrupt", label: "Interrupt", hint: "stop the answer and send" },
];
const NOUNS: Record<ActionKind, [string, string]> = {
  tool_approval: ["approval", "approvals"],
  question: ["question", "questions"],
  elicitation: ["form", "forms"],
  client_tool: ["client tool call", "client tool calls"],
};

/** What the chat waits for, in words: "the approval", "all 3 pending approvals", "all 2 pending
 * requests" (kinds mixed). Stopping the wait cancels every one of them, never one alone. */
export function pendingWords(pending: PendingAction[]): { what: string; cancel: string; cancelAndSend: string; answer: string } {
  const kinds = new Set(pending.map((a) => a.kind));
  if (!pending.length) return { what: "what is pending", cancel: "Cancel what is pending", cancelAndSend: "Cancel what is pending and send", answer: "answer" };
  const [one, many] = kinds.size === 1 ? NOUNS[pending[0].kind] : ["request", "requests"];
  const what = pending.length > 1 ? `all ${pending.length} pending ${many}` : `the pending ${one}`;
  const answer = kinds.size === 1 && pending[0].kind === "tool_approval" ? "approval" : kinds.size === 1 && pending[0].kind === "client_tool" ? "client" : "answer";
  return { what, cancel: `Cancel ${what}`, cancelAndSend: `Cancel ${what} and send`, answer };
}

// Waiting for an answer no turn runs: a steer has nothing to join (the server queues it), and
// interrupting cancels what is pending.
function whileAsked(pending: PendingAction[]): { value: BusyBehavior; label: string; hint: string }[] {
  const words = pendingWords(pending);
  return [
    { value: "queue", label: "Queue", hint: "send when the wait is over" },
    { value: "interrupt", label: words.cancelAndSend, hint: "each call is told it was cancelled; the message runs next" },
  ];
}

function loadDraft(key: string | undefined): string {
  if (!key) return "";
  try {
    return sessionStorage.getItem(key) ?? "";
  } catch {
    return "";
  }
}

function saveDraft(key: string | undefined, text: string): void {
  if (!key) return;
  try {
    if (text) sessionStorage.setItem(key, text);
    else sessionStorage.removeItem(key);
  } catch {
    // Storage full or refused: the draft lives as long as the page.
  }
}

export function Composer({ busy, awaitingAnswer, pending = [], queued = 0, draftKey, disabled, disabledReason, onSend, onStop, placeholder, onJump }: Props) {
  const [text, setTextState] = useState(() => loadDraft(draftKey));
  const keyRef = useRef(draftKey);
  // Another chat: its own draft.
  useEffect(() => {
    if (keyRef.current === draftKey) return;
    keyRef.current = draftKey;
    setTextState(loadDraft(draftKey));
  }, [draftKey]);
  const setText = (next: string | ((t: string) => string)) => {
    setTextState((t) => {
      const value = typeof next === "function" ? next(t) : next;
      saveDraft(keyRef.current, value);
      return value;
    });
  };
  const [files, setFiles] = useState<FilePart[]>([]);
  const [uploading, setUploading] = useState(0);
  const [behavior, setBehavior] = useState<BusyBehavior>("queue");
  const [error, setError] = useState<string | null>(null);
  const [sending, setSending] = useState(false);
  const fileInput = useRef<HTMLInputElement>(null);
  const box = useRef<HTMLTextAreaElement>(null);
  // Text offered by an MCP App of this chat (ui/message): added to what is typed, never sent.
  useEffect(() => {
    if (!draftKey) return;
    return onDraftOffered(draftKey, (offered) => {
      setText((t) => (t.trim() ? `${t}\n\n${offered}` : offered));
      box.current?.focus();
    });
  }, [draftKey]);

  const canSend = !disabled && !sending && uploading === 0 && (text.trim() !== "" || files.length > 0);

  const send = async () => {
    if (!canSend) return;
    const content: InputPart[] = [...files];
    if (text.trim()) content.unshift({ type: "text", text });
    // The box empties at once, so the next message can be typed while this one is on its way.
    const sentText = text;
    setText("");
    setFiles([]);
    setSending(true);
    setError(null);
    try {
      await onSend(content, busy ? (awaitingAnswer && behavior === "steer" ? "queue" : behavior) : "queue");
    } catch (e) {
      setError(describe(e));
      setText((t) => (t === "" ? sentText : t));
      setFiles((fs) => (fs.length === 0 ? content.filter((p): p is FilePart => p.type === "file") : fs));
    } finally {
      setSending(false);
      box.current?.focus();
    }
  };

  const attach = async (list: FileList | null) => {
    if (!list) return;
    setError(null);
    for (const f of Array.from(list)) {
      setUploading((n) => n + 1);
      try {
        const ref = await uploadFile(f);
        setFiles((fs) => [...fs, { type: "file", file_id: ref.id, media_type: ref.media_type, name: f.name }]);
      } catch (e) {
        setError(`${f.name}: ${describe(e)}`);
      } finally {
        setUploading((n) => n - 1);
      }
    }
    if (fileInput.current) fileInput.current.value = "";
  };

  return (
    <form
      class="composer"
      aria-label="Compose"
      onSubmit={(e) => {
        e.preventDefault();
        void send();
      }}
    >
      {onJump && <button type="button" class="jump-to-action" onClick={onJump}>Waiting for you ↓</button>}
      {awaitingAnswer && (
        <p class="composer-note" role="note">
          {pendingWords(pending).answer === "client"
            ? "The agent waits for the chat's client above."
            : `The agent waits for your ${pendingWords(pending).answer} above.`}{" "}
          A message sent here is queued until then, unless you cancel {pendingWords(pending).what}.
        </p>
      )}
      {busy && (
        <fieldset class="behavior">
          <legend>{awaitingAnswer ? "While the agent waits for you" : "While the answer runs"}</legend>
          {(awaitingAnswer ? whileAsked(pending) : BEHAVIORS).map((b) => (
            <label key={b.value} title={b.hint}>
              <input type="radio" name="behavior" value={b.value} checked={behavior === b.value || (awaitingAnswer && behavior === "steer" && b.value === "queue")} onChange={() => setBehavior(b.value)} />
              {b.label}
            </label>
          ))}
        </fieldset>
      )}
      {files.length > 0 && (
        <ul class="attachments" aria-label="Attached files">
          {files.map((f) => (
            <li key={f.file_id}>
              {f.name}
              <button type="button" class="small" aria-label={`Remove ${f.name}`} onClick={() => setFiles((fs) => fs.filter((x) => x.file_id !== f.file_id))}>×</button>
            </li>
          ))}
        </ul>
      )}
      <div class="composer-row">
        <label for="message" class="visually-hidden">Message</label>
        <textarea
          id="message"
          ref={box}
          rows={2}
          value={text}
          placeholder={disabled ? disabledReason : placeholder ?? "Message (Enter sends, Shift+Enter for a new line)"}
          disabled={disabled}
          onInput={(e) => setText((e.target as HTMLTextAreaElement).value)}
          onKeyDown={(e) => {
            if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
              e.preventDefault();
              void send();
            }
          }}
        />
        <div class="composer-actions">
          <input ref={fileInput} id="attach" type="file" multiple class="visually-hidden" tabIndex={-1} aria-hidden="true" accept="image/png,image/jpeg,image/gif,image/webp,text/plain,application/pdf" onChange={(e) => attach((e.target as HTMLInputElement).files)} disabled={disabled} />
          <button type="button" onClick={() => fileInput.current?.click()} disabled={disabled} aria-label="Attach files">
            {uploading ? "Uploading…" : "Attach"}
          </button>
          {busy && onStop && awaitingAnswer && (
            <button type="button" class="danger" onClick={onStop}
              title={`Each call is told it was cancelled${queued ? "; queued messages run next" : ""}. To answer one alone, use its card above.`}>
              {pendingWords(pending).cancel}
            </button>
          )}
          {busy && onStop && !awaitingAnswer && (
            <button type="button" class="danger" onClick={onStop} title={queued ? "Waiting messages (queued or steering) are kept: the first one runs as soon as the answer stops." : undefined}>
              {queued ? `Stop (${queued} more ${queued === 1 ? "message" : "messages"} will run next)` : "Stop"}
            </button>
          )}
          <button type="submit" class="primary" disabled={!canSend}>Send</button>
        </div>
      </div>
      {error && <p class="error" role="alert">{error}</p>}
    </form>
  );
}
