// Small building blocks of the admin pages: labelled fields (every control has a visible label,
// which is also what the browser tests find it by), loading, and errors in words (role="alert").

import type { ComponentChildren } from "preact";
import { useCallback, useEffect, useId, useState } from "preact/hooks";
import { describe } from "../api/client";
import "./admin.css";

export interface Loaded<T> { data: T | null; error: string | null; reload: () => void }

/** Run `fn` on mount (and on reload); its error becomes a sentence. */
export function useLoad<T>(fn: () => Promise<T>, deps: unknown[] = []): Loaded<T> {
  const [data, setData] = useState<T | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let live = true;
    fn().then((d) => { if (live) { setData(d); setError(null); } }).catch((e) => { if (live) setError(describe(e)); });
    return () => { live = false; };
  }, [...deps, tick]);
  return { data, error, reload: useCallback(() => setTick((t) => t + 1), []) };
}

/** A button action with a busy state and its error kept for an alert next to it. */
export function useAction(): { busy: boolean; error: string | null; run: (fn: () => Promise<void>) => Promise<void>; clear: () => void } {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const run = async (fn: () => Promise<void>) => {
    setBusy(true);
    setError(null);
    try {
      await fn();
    } catch (e) {
      setError(describe(e));
    } finally {
      setBusy(false);
    }
  };
  return { busy, error, run, clear: () => setError(null) };
}

export function Alert({ children }: { children: ComponentChildren }) {
  return <p class="admin-alert" role="alert">{children}</p>;
}

export function Status({ children }: { children: ComponentChildren }) {
  return <p class="admin-status" role="status">{children}</p>;
}

interface TextProps {
  label: string; value: string; onInput: (v: string) => void; type?: string; placeholder?: string;
  hint?: ComponentChildren; required?: boolean; list?: string; autoComplete?: string; multiline?: boolean; rows?: number;
  /** The label is for screen readers (and tests) only: a table header says it for the eye. */
  hideLabel?: boolean;
}

export function TextField(p: TextProps) {
  // The hint is the field's description, not part of its name (screen readers and tests alike).
  const id = useId();
  const hint = p.hint ? id + "-hint" : undefined;
  return (
    <div class="admin-field">
      <span class={p.hideLabel ? "visually-hidden" : "admin-label-row"}>
        <label class="admin-label" for={id}>{p.label}</label>
        {/* Outside the label: the field's name stays exactly its label. */}
        {p.required && <span class="admin-required" aria-hidden="true">*</span>}
      </span>
      {p.multiline ? (
        <textarea id={id} value={p.value} rows={p.rows ?? 3} placeholder={p.placeholder} required={p.required} aria-describedby={hint}
          onInput={(e) => p.onInput((e.target as HTMLTextAreaElement).value)} />
      ) : (
        <input id={id} type={(p.type ?? "text") as "text"} value={p.value} placeholder={p.placeholder} required={p.required} list={p.list}
          aria-describedby={hint} autoComplete={p.autoComplete ?? "off"} onInput={(e) => p.onInput((e.target as HTMLInputElement).value)} />
      )}
      {p.hint && <span class="admin-hint" id={hint}>{p.hint}</span>}
    </div>
  );
}

export function Check({ label, checked, onChange, hint }: { label: string; checked: boolean; onChange: (v: boolean) => void; hint?: string }) {
  const id = useId();
  return (
    <div class="admin-check">
      <input id={id} type="checkbox" checked={checked} aria-describedby={hint ? id + "-hint" : undefined}
        onChange={(e) => onChange((e.target as HTMLInputElement).checked)} />
      <label for={id}>{label}</label>
      {hint && <span class="admin-hint" id={id + "-hint"}>{hint}</span>}
    </div>
  );
}

export function Select<T extends string>({ label, value, options, onChange, hint }: {
  label: string; value: T; options: { value: T; label: string }[]; onChange: (v: T) => void; hint?: ComponentChildren;
}) {
  const id = useId();
  return (
    <div class="admin-field">
      <label class="admin-label" for={id}>{label}</label>
      <select id={id} value={value} aria-describedby={hint ? id + "-hint" : undefined} onChange={(e) => onChange((e.target as HTMLSelectElement).value as T)}>
        {options.map((o) => <option key={o.value} value={o.value}>{o.label}</option>)}
      </select>
      {hint && <span class="admin-hint" id={id + "-hint"}>{hint}</span>}
    </div>
  );
}

/** A page with a heading, a lead sentence and the load error, if any. */
export function AdminPage({ title, lead, error, children }: { title: string; lead?: ComponentChildren; error?: string | null; children: ComponentChildren }) {
  const id = "h-" + title.toLowerCase().replace(/[^a-z0-9]+/g, "-");
  return (
    <section class="page admin-page" aria-labelledby={id}>
      <h1 id={id}>{title}</h1>
      {lead && <p class="muted">{lead}</p>}
      {error && <Alert>{error}</Alert>}
      {children}
    </section>
  );
}

/** Lines of a textarea as a list, blanks dropped. */
export function lines(text: string): string[] {
  return text.split(/\r?\n/).map((s) => s.trim()).filter(Boolean);
}

/** Names from a comma- or line-separated list. */
export function names(text: string): string[] {
  return text.split(/[\s,]+/).map((s) => s.trim()).filter(Boolean);
}

/** `NAME=value` (or `Name: value`) lines as a map; the first separator splits. */
export function pairs(text: string, sep: "=" | ":"): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of lines(text)) {
    const i = line.indexOf(sep);
    if (i > 0) out[line.slice(0, i).trim()] = line.slice(i + 1).trim();
  }
  return out;
}

/** A number input's value, or null when empty; NaN is refused by the caller's validation. */
export function numberOrNull(text: string): number | null {
  return text.trim() === "" ? null : Number(text);
}
