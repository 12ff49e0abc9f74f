// The message box: Enter sends, Shift+Enter is a new line; files are uploaded as they are picked;
// while a turn runs the user picks what the message does (queue, steer, interrupt).

import { useRef, useState } from "preact/hooks";
import { describe } from "../api/client";
import { uploadFile } from "../api/chats";
import type { BusyBehavior, FilePart, InputPart } from "../api/types";

interface Props {
  busy: boolean;
  disabled?: boolean;
  disabledReason?: string;
  onSend: (content: InputPart[], behavior: BusyBehavior) => Promise<void>;
  onStop?: () => void;
  placeholder?: string;
}

const BEHAVIORS: { value: BusyBehavior; label: string; hint: string }[] = [
  { value: "queue", label: "Queue", hint: "send after the answer" },
  { value: "steer", label: "Steer", hint: "add to the running answer" },
  { value: "interrupt", label: "Interrupt", hint: "stop the answer and send" },
];

export function Composer({ busy, disabled, disabledReason, onSend, onStop, placeholder }: Props) {
  const [text, setText] = useState("");
  const [files, setFiles] = useState<FilePart[]>([]);
  const [uploading, setUploading] = useState(0);
  const [behavior, setBehavior] = useState<BusyBehavior>("queue");
  const [error, setError] = useState<string | null>(null);
  const [sending, setSending] = useState(false);
  const fileInput = useRef<HTMLInputElement>(null);
  const box = useRef<HTMLTextAreaElement>(null);

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
      await onSend(content, busy ? behavior : "queue");
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
      {busy && (
        <fieldset class="behavior">
          <legend>While the answer runs</legend>
          {BEHAVIORS.map((b) => (
            <label key={b.value} title={b.hint}>
              <input type="radio" name="behavior" value={b.value} checked={behavior === b.value} onChange={() => setBehavior(b.value)} />
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
          {busy && onStop && <button type="button" class="danger" onClick={onStop}>Stop</button>}
          <button type="submit" class="primary" disabled={!canSend}>Send</button>
        </div>
      </div>
      {error && <p class="error" role="alert">{error}</p>}
    </form>
  );
}
