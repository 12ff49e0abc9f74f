// One tool call as a card: tool and server (from `slug__tool`), arguments, result or error,
// duration, files the tool returned, and a link to the chat a `spawn_agent` call created.

import type { ToolCallPart, ToolProgressPart, ToolResultPart } from "../api/types";
import { FileView } from "./FileView";
import { Markdown } from "./Markdown";
import { McpApp } from "./McpApp";
import { callState, editedArgs, splitToolName, type Outcome } from "./state";

interface Props {
  call: ToolCallPart | null;
  result: ToolResultPart | null;
  progress?: ToolProgressPart | null;
  durationMs?: number | null;
  /** The turn is still running (a call without a result is then in progress, else it never ended). */
  live: boolean;
  /** The call waits for the user's (or the client's) answer: the chat is `requires_action`, or a
   * running call waits on an MCP server's form. */
  awaiting?: boolean;
  /** How the call's action was answered (denied, edited arguments, a form nobody answered, ...). */
  outcome?: Outcome | null;
}

function argsText(call: ToolCallPart | null, edited: Record<string, unknown> | null): string {
  if (edited) return JSON.stringify(edited, null, 2);
  if (!call) return "";
  if (call.args_delta != null && (!call.args || Object.keys(call.args).length === 0)) return call.args_delta;
  return JSON.stringify(call.args ?? {}, null, 2);
}

interface Attachment { type?: string; file_id?: string; media_type?: string; name?: string }
interface OutputFile { file_id: string; name?: string; media_type: string; total_chars: number }

/** A result too long for the model was stored as a file: `{output_file, preview, note}` (docs/api.md). */
function outputFile(result: unknown): OutputFile | null {
  if (!result || typeof result !== "object") return null;
  const f = (result as { output_file?: Partial<OutputFile> }).output_file;
  return f && typeof f.file_id === "string" && typeof f.media_type === "string" && typeof f.total_chars === "number" ? (f as OutputFile) : null;
}

function attachments(result: unknown): Attachment[] {
  if (!result || typeof result !== "object" || Array.isArray(result)) return [];
  const list = (result as { attachments?: unknown }).attachments;
  return Array.isArray(list) ? (list as Attachment[]).filter((a) => a && a.file_id && a.media_type) : [];
}

function ResultBody({ result }: { result: unknown }) {
  if (result == null) return <p class="muted">No output.</p>;
  if (typeof result === "string") return <Markdown text={result} />;
  const stored = outputFile(result);
  if (stored) {
    const preview = String((result as { preview?: unknown }).preview ?? "");
    return (
      <>
        <pre class="json tool-preview">{preview}</pre>
        <p class="muted tool-output-file">
          The first {preview.length.toLocaleString()} of {stored.total_chars.toLocaleString()} characters.{" "}
          <FileView fileId={stored.file_id} mediaType={stored.media_type} name={stored.name ?? "output.txt"}
            label={`Whole output (${stored.total_chars.toLocaleString()} characters)`} />
        </p>
        {attachments(result).map((a) => <FileView key={a.file_id} fileId={a.file_id!} mediaType={a.media_type!} name={a.name} />)}
      </>
    );
  }
  if (typeof result === "object" && !Array.isArray(result)) {
    const r = result as { text?: unknown; error?: unknown; attachments?: Attachment[]; structured_content?: unknown };
    const files = attachments(result);
    const rest = { ...r } as Record<string, unknown>;
    delete rest.text;
    delete rest.attachments;
    return (
      <>
        {typeof r.text === "string" && <Markdown text={r.text} />}
        {files.map((a) => <FileView key={a.file_id} fileId={a.file_id!} mediaType={a.media_type!} name={a.name} />)}
        {Object.keys(rest).length > 0 && <pre class="json">{JSON.stringify(rest, null, 2)}</pre>}
      </>
    );
  }
  return <pre class="json">{JSON.stringify(result, null, 2)}</pre>;
}

/** Short text, images and a stored output's preview show at once; other results on demand. */
function openByDefault(result: unknown): boolean {
  if (typeof result === "string") return result.length < 600;
  return outputFile(result) != null || attachments(result).some((a) => a.media_type!.startsWith("image/"));
}

function errorText(result: unknown): string {
  if (typeof result === "string") return result;
  if (result && typeof result === "object" && "error" in result) return String((result as { error: unknown }).error);
  return JSON.stringify(result);
}

function childChatId(call: ToolCallPart | null, result: ToolResultPart | null): string | null {
  const name = call?.tool_name ?? result?.tool_name;
  if (!name || !/(^|__)(spawn_agent|message_agent|wait_agent)$/.test(name)) return null;
  const r = result?.result as { chat_id?: unknown } | undefined;
  if (r && typeof r.chat_id === "string") return r.chat_id;
  const a = call?.args as { chat_id?: unknown } | undefined;
  return a && typeof a.chat_id === "string" ? a.chat_id : null;
}

export function ToolCard({ call, result, progress, durationMs, live, awaiting, outcome }: Props) {
  const name = call?.tool_name ?? result?.tool_name ?? "tool";
  const { server, tool } = splitToolName(name);
  const { label: state, ran, note } = callState(result, outcome, { awaiting, live });
  const child = childChatId(call, result);
  const edited = editedArgs(result, outcome);
  const args = argsText(call, edited);
  // An edited call's result carries what ran ({edited_args, result}): the tool's own output is inside.
  const output = edited && result?.result && typeof result.result === "object" && "edited_args" in (result.result as object)
    ? (result.result as { result?: unknown }).result : result?.result;
  const cls = state.replaceAll(" ", "-");
  return (
    <article class={`tool-card tool-${cls}`} aria-label={`Tool ${tool}${server ? ` on ${server}` : ""}`}>
      <header>
        <span class="tool-name">{tool}</span>
        {server && <span class="tool-server">on {server}</span>}
        <span class={`badge tool-state-${cls}`}>{state}</span>
        {ran && durationMs != null && <span class="muted">{durationMs < 1000 ? `${durationMs} ms` : `${(durationMs / 1000).toFixed(1)} s`}</span>}
      </header>
      {args && args !== "{}" && (
        <details open={!!edited}>
          <summary>{edited ? "Arguments (edited by you before approving)" : "Arguments"}</summary>
          <pre class="json">{args}</pre>
          {edited && call && (
            <details class="tool-original-args">
              <summary>The model's arguments</summary>
              <pre class="json">{argsText(call, null)}</pre>
            </details>
          )}
        </details>
      )}
      {progress && !result && (
        <p class="muted" role="status">
          {progress.message ?? "Working"} {progress.total ? `${Math.round((progress.progress / progress.total) * 100)}%` : ""}
        </p>
      )}
      {note && <p class="muted tool-note">{note}</p>}
      {result?.app && <McpApp app={result.app} call={call} result={result} />}
      {result && ran && result.is_error && <p class="error">Error: {errorText(output)}</p>}
      {result && ran && !result.is_error && (
        <details open={openByDefault(output)}>
          <summary>Result</summary>
          <ResultBody result={output} />
        </details>
      )}
      {child && <p><a href={`#/chats/${child}`}>Open the sub-agent's chat</a></p>}
    </article>
  );
}
