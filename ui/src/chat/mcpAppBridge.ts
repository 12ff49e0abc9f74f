// The host side of an MCP App's postMessage bridge (extension io.modelcontextprotocol/ui,
// 2026-01-26), free of the DOM and of Preact so the tests can drive it message by message.
//
// Every request a view sends gets exactly one answer: a result, or a JSON-RPC error, never
// silence (a view would wait forever). What chatd does not offer is -32601 (method not found).
// Supported requests:
// - ui/initialize, ping, ui/request-display-mode (inline only);
// - tools/call and resources/read, relayed to the view's own server through chatd's API (which
//   checks the chat, the server, and for tools the visibility; it caps what a read returns);
// - ui/open-link: http(s) only; the link opens in a new tab only when the person clicks to open
//   it (the host shows it), one link at a time;
// - ui/message: text only, role "user"; it is put in the chat's message box for the person to
//   read and send, never sent in their name.
// Notifications: initialized (then the tool's input and result are sent), size-changed.

export const PROTOCOL_VERSION = "2026-01-26";
export const MAX_HEIGHT = 600;
// A message longer than this is refused rather than dropped into the box.
export const MAX_MESSAGE_CHARS = 20_000;

export const INVALID_REQUEST = -32600;
export const METHOD_NOT_FOUND = -32601;
export const INVALID_PARAMS = -32602;
// The extension's "implementation-defined" error: denied by the person, or failed.
export const DENIED = -32000;

type RpcId = string | number;
type Params = Record<string, unknown>;

/** What the bridge needs from the page around the view. */
export interface BridgeHost {
  /** ui/initialize's hostContext: the tool, theme, locale, … */
  hostContext(): Params;
  /** The tool's arguments and its CallToolResult, sent after the view's `initialized`. */
  toolInput(): Params;
  toolResult(): Params;
  callTool(name: string, args: Params): Promise<unknown>;
  readResource(uri: string): Promise<unknown>;
  /** Show the link to the person; true once they opened it (their click opens the tab), false
   *  when they declined. */
  confirmLink(url: string): Promise<boolean>;
  /** Put text in this chat's message box; false when there is no box to put it in. */
  draftMessage(text: string): boolean;
  resize(height: number): void;
}

class RpcError extends Error {
  constructor(readonly code: number, message: string) {
    super(message);
  }
}

function isObject(v: unknown): v is Params {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function isId(v: unknown): v is RpcId {
  return typeof v === "string" || (typeof v === "number" && Number.isFinite(v));
}

/** The link a view asked to open, if it may be offered at all: an absolute http(s) URL. */
export function linkToOpen(url: unknown): string {
  if (typeof url !== "string" || url.length > 8192) throw new RpcError(INVALID_PARAMS, "Invalid URL");
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new RpcError(INVALID_PARAMS, "Invalid URL");
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
    throw new RpcError(INVALID_PARAMS, "Policy violation: only http and https links can be opened");
  }
  return parsed.href;
}

/** The text of a ui/message: `content` is one text block (the 2026-01-26 shape) or a list of them. */
export function messageText(params: Params): string {
  if (params.role !== "user") throw new RpcError(INVALID_PARAMS, "Invalid message format: the role must be \"user\"");
  const blocks = Array.isArray(params.content) ? params.content : [params.content];
  const texts: string[] = [];
  for (const block of blocks) {
    if (!isObject(block) || block.type !== "text" || typeof block.text !== "string") {
      throw new RpcError(INVALID_PARAMS, "Invalid message format: chatd takes text content only");
    }
    texts.push(block.text);
  }
  const text = texts.join("\n\n");
  if (!text.trim()) throw new RpcError(INVALID_PARAMS, "Invalid message format: the message is empty");
  if (text.length > MAX_MESSAGE_CHARS) {
    throw new RpcError(INVALID_PARAMS, `Invalid message format: longer than ${MAX_MESSAGE_CHARS} characters`);
  }
  return text;
}

/** A handler for every `message` event of the view's own window (the caller checks the source):
 *  `post` sends a message to the view. Resolves once the message is answered. */
export function createBridge(host: BridgeHost, post: (msg: Params) => void): (data: unknown) => Promise<void> {
  let linkPending = false;

  async function answer(method: string, params: Params): Promise<unknown> {
    switch (method) {
      case "ui/initialize":
        return {
          protocolVersion: PROTOCOL_VERSION,
          hostInfo: { name: "chatd", version: "1" },
          hostCapabilities: { openLinks: {}, serverTools: {}, serverResources: {}, logging: {}, message: { text: {} } },
          hostContext: host.hostContext(),
        };
      case "ping":
        return {};
      case "ui/request-display-mode":
        return { mode: "inline" };
      case "tools/call": {
        if (typeof params.name !== "string" || !params.name) throw new RpcError(INVALID_PARAMS, "tools/call needs a tool name");
        if (params.arguments !== undefined && !isObject(params.arguments)) {
          throw new RpcError(INVALID_PARAMS, "tools/call arguments must be an object");
        }
        return relay(() => host.callTool(params.name as string, (params.arguments as Params | undefined) ?? {}));
      }
      case "resources/read": {
        if (typeof params.uri !== "string" || !params.uri) throw new RpcError(INVALID_PARAMS, "resources/read needs a uri");
        return relay(() => host.readResource(params.uri as string));
      }
      case "ui/open-link": {
        const url = linkToOpen(params.url);
        if (linkPending) throw new RpcError(DENIED, "Another link is waiting for the person's answer");
        linkPending = true;
        try {
          if (!(await host.confirmLink(url))) throw new RpcError(DENIED, "Link opening denied by user");
        } finally {
          linkPending = false;
        }
        return {};
      }
      case "ui/message": {
        if (!host.draftMessage(messageText(params))) throw new RpcError(DENIED, "Message sending denied: no message box");
        return {};
      }
      default:
        throw new RpcError(METHOD_NOT_FOUND, `Method not found: chatd does not support ${method} from an MCP App`);
    }
  }

  async function relay(call: () => Promise<unknown>): Promise<unknown> {
    try {
      return await call();
    } catch (e) {
      throw new RpcError(DENIED, e instanceof Error ? e.message : String(e));
    }
  }

  function notified(method: string, params: Params): void {
    if (method === "ui/notifications/initialized") {
      post({ jsonrpc: "2.0", method: "ui/notifications/tool-input", params: { arguments: host.toolInput() } });
      post({ jsonrpc: "2.0", method: "ui/notifications/tool-result", params: host.toolResult() });
    } else if (method === "ui/notifications/size-changed") {
      const h = Number(params.height);
      if (Number.isFinite(h) && h > 0) host.resize(Math.min(Math.ceil(h), MAX_HEIGHT));
    }
    // Others (notifications/message logs, …) need no answer and change nothing here.
  }

  return async (data: unknown) => {
    if (!isObject(data) || data.jsonrpc !== "2.0") return; // not JSON-RPC: nothing to answer
    const params = isObject(data.params) ? data.params : {};
    const hasId = isId(data.id);
    if (typeof data.method !== "string") {
      // A response (the host sends no requests) is ignored; anything else with an id is answered.
      if (hasId && !("result" in data) && !("error" in data)) {
        post({ jsonrpc: "2.0", id: data.id, error: { code: INVALID_REQUEST, message: "Invalid request: no method" } });
      }
      return;
    }
    if (!hasId) {
      if (data.id === undefined) notified(data.method, params);
      else post({ jsonrpc: "2.0", id: null, error: { code: INVALID_REQUEST, message: "Invalid request: bad id" } });
      return;
    }
    const id = data.id as RpcId;
    try {
      post({ jsonrpc: "2.0", id, result: await answer(data.method, params) });
    } catch (e) {
      const error = e instanceof RpcError ? e : new RpcError(DENIED, e instanceof Error ? e.message : String(e));
      post({ jsonrpc: "2.0", id, error: { code: error.code, message: error.message } });
    }
  };
}
