// An MCP App (extension io.modelcontextprotocol/ui): a tool's `ui://` view shown in its tool card.
//
// Isolation: the view's document comes from chatd's /mcp-apps/frame (a short-lived ticket in the
// address, no bearer token) with the view's own Content-Security-Policy, and the iframe is
// `sandbox="allow-scripts"` without allow-same-origin: an opaque origin that cannot read this
// page's DOM, storage or token, nor call the API as the user. (A srcdoc frame would inherit this
// page's CSP, whose `script-src 'self'` forbids the inline scripts views are made of.)
//
// The bridge: JSON-RPC 2.0 over postMessage, accepted only from this iframe's window. Supported:
// ui/initialize (host context: the tool, theme, locale), ping, tools/call (relayed to the view's
// own server through the API, which checks the chat, the server and the tool's visibility),
// ui/request-display-mode (inline only), size-changed and log notifications. Anything else is
// answered with "method not found". After the view's `initialized` notification it gets the tool's
// input and result.

import { createContext } from "preact";
import { useContext, useEffect, useRef, useState } from "preact/hooks";
import { post } from "../api/client";
import type { McpAppLink, ToolCallPart, ToolResultPart } from "../api/types";

/** The chat whose messages are shown: an app's requests are checked against it. */
export const ChatIdContext = createContext<string | null>(null);

const PROTOCOL_VERSION = "2026-01-26";
const MAX_HEIGHT = 600;

interface RpcMessage { jsonrpc?: string; id?: string | number; method?: string; params?: Record<string, unknown> }

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

  useEffect(() => {
    if (!url || !chatId) return;
    const send = (msg: Record<string, unknown>) => frame.current?.contentWindow?.postMessage({ jsonrpc: "2.0", ...msg }, "*");
    const reply = (id: string | number, res: unknown) => send({ id, result: res });
    const fail = (id: string | number, code: number, message: string) => send({ id, error: { code, message } });

    async function onRequest(id: string | number, method: string, params: Record<string, unknown>) {
      switch (method) {
        case "ui/initialize":
          return reply(id, {
            protocolVersion: PROTOCOL_VERSION,
            hostInfo: { name: "chatd", version: "1" },
            hostCapabilities: { serverTools: {}, logging: {} },
            hostContext: {
              toolInfo: { id: latest.current.result.tool_call_id, tool: { name: app.tool, inputSchema: { type: "object" } } },
              theme: matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light",
              displayMode: "inline",
              availableDisplayModes: ["inline"],
              containerDimensions: { maxHeight: MAX_HEIGHT },
              locale: navigator.language,
              timeZone: Intl.DateTimeFormat().resolvedOptions().timeZone,
              platform: "web",
            },
          });
        case "ping":
          return reply(id, {});
        case "ui/request-display-mode":
          return reply(id, { mode: "inline" });
        case "tools/call": {
          const name = params.name;
          if (typeof name !== "string") return fail(id, -32602, "tools/call needs a tool name");
          try {
            const res = await post<unknown>(`/chats/${chatId}/mcp-apps/tools-call`, {
              server_id: app.server_id, name, arguments: (params.arguments as Record<string, unknown> | undefined) ?? {},
            });
            return reply(id, res);
          } catch (e) {
            return fail(id, -32000, e instanceof Error ? e.message : String(e));
          }
        }
        default:
          return fail(id, -32601, `chatd does not support ${method} from an MCP App`);
      }
    }

    function onNotification(method: string, params: Record<string, unknown>) {
      if (method === "ui/notifications/initialized") {
        const { call: c, result: r } = latest.current;
        send({ method: "ui/notifications/tool-input", params: { arguments: c?.args ?? {} } });
        send({ method: "ui/notifications/tool-result", params: callToolResult(r) });
      } else if (method === "ui/notifications/size-changed") {
        const h = Number(params.height);
        if (Number.isFinite(h) && h > 0) setHeight(Math.min(Math.ceil(h), MAX_HEIGHT));
      }
    }

    function onMessage(ev: MessageEvent) {
      // Only this frame's window speaks for this view; other frames and windows are ignored.
      if (!frame.current || ev.source !== frame.current.contentWindow) return;
      const msg = ev.data as RpcMessage;
      if (!msg || typeof msg !== "object" || msg.jsonrpc !== "2.0" || typeof msg.method !== "string") return;
      const params = msg.params && typeof msg.params === "object" ? msg.params : {};
      if (msg.id !== undefined && msg.id !== null) void onRequest(msg.id, msg.method, params);
      else onNotification(msg.method, params);
    }
    window.addEventListener("message", onMessage);
    return () => window.removeEventListener("message", onMessage);
  }, [url, chatId, app.server_id, app.tool]);

  if (error) return <p class="error">The tool's app could not be shown: {error}</p>;
  if (!url) return <p class="muted">Loading the tool's app…</p>;
  return (
    <iframe
      ref={frame}
      class="mcp-app"
      title={`App of ${app.tool}`}
      src={url}
      sandbox="allow-scripts"
      referrerpolicy="no-referrer"
      style={{ height: `${height}px` }}
    />
  );
}
