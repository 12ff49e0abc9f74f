// An MCP App (extension io.modelcontextprotocol/ui): a tool's `ui://` view shown in its tool card.
//
// Isolation: the view's document comes from chatd's /mcp-apps/frame (a short-lived ticket in the
// address, no bearer token) with the view's own Content-Security-Policy, and the iframe is
// `sandbox="allow-scripts"` without allow-same-origin: an opaque origin that cannot read this
// page's DOM, storage or token, nor call the API as the user. (A srcdoc frame would inherit this
// page's CSP, whose `script-src 'self'` forbids the inline scripts views are made of.)
//
// The bridge (mcpAppBridge.ts): JSON-RPC 2.0 over postMessage, accepted only from this iframe's
// window; every request is answered (a result or an error, -32601 for what chatd does not offer).
// tools/call and resources/read go to the view's own server through chatd's API; a link the view
// asks to open is shown here and opens in a new tab only on the person's click; a message the view
// sends is put in the chat's message box for the person to send.

import { createContext } from "preact";
import { useContext, useEffect, useRef, useState } from "preact/hooks";
import { post } from "../api/client";
import type { McpAppLink, ToolCallPart, ToolResultPart } from "../api/types";
import { chatDraftKey, offerDraft } from "./drafts";
import { MAX_HEIGHT, createBridge } from "./mcpAppBridge";

/** The chat whose messages are shown: an app's requests are checked against it. */
export const ChatIdContext = createContext<string | null>(null);

/** The tool result as the view expects it (a CallToolResult), rebuilt from the stored result. */
function callToolResult(result: ToolResultPart): Record<string, unknown> {
  const r = result.result;
  const content: unknown[] = [];
  let structured: unknown;
  if (typeof r === "string") content.push({ type: "text", text: r });
  else if (r && typeof r === "object" && !Array.isArray(r)) {
    const o = r as { text?: unknown; error?: unknown; structured_content?: unknown };
    if (typeof o.text === "string") content.push({ type: "text", text: o.text });
    if (typeof o.error === "string") content.push({ type: "text", text: o.error });
    structured = o.structured_content;
  } else if (r != null) content.push({ type: "text", text: JSON.stringify(r) });
  return { content, ...(structured !== undefined ? { structuredContent: structured } : {}), isError: !!result.is_error };
}

export function McpApp({ app, call, result }: { app: McpAppLink; call: ToolCallPart | null; result: ToolResultPart }) {
  const chatId = useContext(ChatIdContext);
  const frame = useRef<HTMLIFrameElement>(null);
  const [url, setUrl] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [height, setHeight] = useState(160);
  // The latest input and result, read by the message handler without re-subscribing.
  const latest = useRef({ call, result });
  latest.current = { call, result };

  useEffect(() => {
    if (!chatId) return;
    let gone = false;
    post<{ url: string }>(`/chats/${chatId}/mcp-apps/frames`, { server_id: app.server_id, resource_uri: app.resource_uri })
      .then((r) => { if (!gone) setUrl(r.url); })
      .catch((e: unknown) => { if (!gone) setError(e instanceof Error ? e.message : String(e)); });
    return () => { gone = true; };
  }, [chatId, app.server_id, app.resource_uri]);

  // A link the view asked to open, waiting for the person's click (one at a time).
  const [link, setLink] = useState<{ url: string; answer: (opened: boolean) => void } | null>(null);

  useEffect(() => {
    if (!url || !chatId) return;
    let asked: ((opened: boolean) => void) | null = null;
    const onMessage = createBridge(
      {
        hostContext: () => ({
          toolInfo: { id: latest.current.result.tool_call_id, tool: { name: app.tool, inputSchema: { type: "object" } } },
          theme: matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light",
          displayMode: "inline",
          availableDisplayModes: ["inline"],
          containerDimensions: { maxHeight: MAX_HEIGHT },
          locale: navigator.language,
          timeZone: Intl.DateTimeFormat().resolvedOptions().timeZone,
          platform: "web",
        }),
        toolInput: () => latest.current.call?.args ?? {},
        toolResult: () => callToolResult(latest.current.result),
        callTool: (name, args) => post<unknown>(`/chats/${chatId}/mcp-apps/tools-call`, { server_id: app.server_id, name, arguments: args }),
        readResource: (uri) => post<unknown>(`/chats/${chatId}/mcp-apps/resources-read`, { server_id: app.server_id, uri }),
        confirmLink: (target) => new Promise<boolean>((resolve) => {
          asked = (opened) => { asked = null; setLink(null); resolve(opened); };
          setLink({ url: target, answer: asked });
        }),
        draftMessage: (text) => offerDraft(chatDraftKey(chatId), text),
        resize: setHeight,
      },
      (msg) => frame.current?.contentWindow?.postMessage(msg, "*"),
    );
    function listener(ev: MessageEvent) {
      // Only this frame's window speaks for this view; other frames and windows are ignored.
      if (!frame.current || ev.source !== frame.current.contentWindow) return;
      void onMessage(ev.data);
    }
    window.addEventListener("message", listener);
    return () => {
      window.removeEventListener("message", listener);
      asked?.(false);
    };
  }, [url, chatId, app.server_id, app.tool]);

  if (error) return <p class="error">The tool's app could not be shown: {error}</p>;
  if (!url) return <p class="muted">Loading the tool's app…</p>;
  return (
    <>
      {link && (
        <div class="mcp-app-link" role="group" aria-label="A link from the app">
          <p>The app asks to open <code class="mcp-app-url">{link.url}</code></p>
          <button
            type="button"
            class="small"
            onClick={() => {
              // Opened from the person's own click, in a new tab that cannot reach this page.
              window.open(link.url, "_blank", "noopener,noreferrer");
              link.answer(true);
            }}
          >
            Open link
          </button>{" "}
          <button type="button" class="small" onClick={() => link.answer(false)}>Cancel</button>
        </div>
      )}
      <iframe
      ref={frame}
      class="mcp-app"
      title={`App of ${app.tool}`}
      src={url}
      sandbox="allow-scripts"
      referrerpolicy="no-referrer"
      style={{ height: `${height}px` }}
      />
    </>
  );
}
