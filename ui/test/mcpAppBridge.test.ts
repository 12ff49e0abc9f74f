import { describe, expect, it, vi } from "vitest";
import {
  DENIED, INVALID_PARAMS, INVALID_REQUEST, MAX_MESSAGE_CHARS, METHOD_NOT_FOUND, type BridgeHost, createBridge,
} from "../src/chat/mcpAppBridge";
import { offerDraft, onDraftOffered } from "../src/chat/drafts";

type Msg = Record<string, unknown>;

function setup(overrides: Partial<BridgeHost> = {}) {
  const sent: Msg[] = [];
  const host: BridgeHost = {
    hostContext: () => ({ displayMode: "inline" }),
    toolInput: () => ({ sides: 6 }),
    toolResult: () => ({ content: [{ type: "text", text: "rolled 3" }], isError: false }),
    callTool: vi.fn(async (name: string) => ({ content: [{ type: "text", text: `called ${name}` }] })),
    readResource: vi.fn(async (uri: string) => ({ contents: [{ uri, text: "faces: 6" }] })),
    confirmLink: vi.fn(async () => true),
    draftMessage: vi.fn(() => true),
    resize: vi.fn(),
    ...overrides,
  };
  const handle = createBridge(host, (m) => sent.push(m));
  const request = async (method: string, params?: unknown, id: unknown = 1) => {
    sent.length = 0;
    await handle({ jsonrpc: "2.0", id, method, params });
    expect(sent).toHaveLength(1);
    return sent[0];
  };
  return { host, sent, handle, request };
}

const errorCode = (m: Msg) => (m.error as { code: number } | undefined)?.code;

describe("MCP App bridge", () => {
  it("answers every request it does not support with method not found, keeping the id", async () => {
    const { request } = setup();
    for (const method of ["ui/update-model-context", "resources/list", "sampling/createMessage", "ui/download-file", "nope"]) {
      const reply = await request(method, {}, `r-${method}`);
      expect(reply.id).toBe(`r-${method}`);
      expect(errorCode(reply)).toBe(METHOD_NOT_FOUND);
    }
  });

  it("answers a malformed request, ignores responses and what is not JSON-RPC", async () => {
    const { handle, sent } = setup();
    await handle({ jsonrpc: "2.0", id: 7, params: {} });
    expect(sent).toEqual([{ jsonrpc: "2.0", id: 7, error: { code: INVALID_REQUEST, message: "Invalid request: no method" } }]);
    sent.length = 0;
    await handle({ jsonrpc: "2.0", id: 8, result: {} });
    await handle({ jsonrpc: "1.0", id: 9, method: "ping" });
    await handle("ping");
    await handle(null);
    expect(sent).toEqual([]);
  });

  it("initializes with the capabilities it serves and sends the tool's input and result after initialized", async () => {
    const { request, handle, sent } = setup();
    const init = await request("ui/initialize", { protocolVersion: "2026-01-26", appCapabilities: {} });
    const result = init.result as Msg;
    expect(result.protocolVersion).toBe("2026-01-26");
    expect(Object.keys(result.hostCapabilities as Msg).sort()).toEqual(["logging", "message", "openLinks", "serverResources", "serverTools"]);
    expect(result.hostContext).toEqual({ displayMode: "inline" });
    sent.length = 0;
    await handle({ jsonrpc: "2.0", method: "ui/notifications/initialized", params: {} });
    expect(sent.map((m) => m.method)).toEqual(["ui/notifications/tool-input", "ui/notifications/tool-result"]);
    expect(sent[0].params).toEqual({ arguments: { sides: 6 } });
  });

  it("relays resources/read to the view's server and turns a refusal into an error", async () => {
    const { request, host } = setup();
    const ok = await request("resources/read", { uri: "dice://faces" });
    expect(host.readResource).toHaveBeenCalledWith("dice://faces");
    expect(ok.result).toEqual({ contents: [{ uri: "dice://faces", text: "faces: 6" }] });
    expect(errorCode(await request("resources/read", {}))).toBe(INVALID_PARAMS);

    const failing = setup({ readResource: async () => { throw new Error("the resource is over the mcp_app_max_bytes limit"); } });
    const refused = await failing.request("resources/read", { uri: "dice://huge" });
    expect(refused.error).toEqual({ code: DENIED, message: "the resource is over the mcp_app_max_bytes limit" });
  });

  it("relays tools/call with its arguments and checks their shape", async () => {
    const { request, host } = setup();
    expect((await request("tools/call", { name: "tally", arguments: { by: 2 } })).result).toEqual({ content: [{ type: "text", text: "called tally" }] });
    expect(host.callTool).toHaveBeenCalledWith("tally", { by: 2 });
    expect(errorCode(await request("tools/call", { arguments: {} }))).toBe(INVALID_PARAMS);
    expect(errorCode(await request("tools/call", { name: "x", arguments: [1] }))).toBe(INVALID_PARAMS);
  });

  it("opens only http(s) links, and only once the person agreed", async () => {
    const { request, host } = setup();
    for (const url of ["javascript:alert(1)", "data:text/html,hi", "file:///etc/passwd", "not a url", 42]) {
      expect(errorCode(await request("ui/open-link", { url }))).toBe(INVALID_PARAMS);
    }
    expect(host.confirmLink).not.toHaveBeenCalled();
    const opened = await request("ui/open-link", { url: "https://example.com/a b" });
    expect(opened.result).toEqual({});
    expect(host.confirmLink).toHaveBeenCalledWith("https://example.com/a%20b");

    const declining = setup({ confirmLink: async () => false });
    expect((await declining.request("ui/open-link", { url: "http://example.com/" })).error)
      .toEqual({ code: DENIED, message: "Link opening denied by user" });
  });

  it("asks about one link at a time", async () => {
    let agree: (v: boolean) => void = () => undefined;
    const { handle, sent } = setup({ confirmLink: () => new Promise<boolean>((r) => { agree = r; }) });
    const first = handle({ jsonrpc: "2.0", id: 1, method: "ui/open-link", params: { url: "https://a.example/" } });
    await handle({ jsonrpc: "2.0", id: 2, method: "ui/open-link", params: { url: "https://b.example/" } });
    expect(sent).toEqual([{ jsonrpc: "2.0", id: 2, error: { code: DENIED, message: "Another link is waiting for the person's answer" } }]);
    agree(true);
    await first;
    expect(sent[1]).toEqual({ jsonrpc: "2.0", id: 1, result: {} });
  });

  it("puts a ui/message's text in the message box, never anything else", async () => {
    const { request, host } = setup();
    expect((await request("ui/message", { role: "user", content: { type: "text", text: "Roll again" } })).result).toEqual({});
    expect(host.draftMessage).toHaveBeenLastCalledWith("Roll again");
    await request("ui/message", { role: "user", content: [{ type: "text", text: "a" }, { type: "text", text: "b" }] });
    expect(host.draftMessage).toHaveBeenLastCalledWith("a\n\nb");
    for (const params of [
      { role: "assistant", content: { type: "text", text: "x" } },
      { role: "user", content: { type: "image", data: "", mimeType: "image/png" } },
      { role: "user", content: { type: "text", text: "  " } },
      { role: "user", content: { type: "text", text: "x".repeat(MAX_MESSAGE_CHARS + 1) } },
      {},
    ]) {
      expect(errorCode(await request("ui/message", params))).toBe(INVALID_PARAMS);
    }
    expect(host.draftMessage).toHaveBeenCalledTimes(2);
    const nowhere = setup({ draftMessage: () => false });
    expect(errorCode(await nowhere.request("ui/message", { role: "user", content: { type: "text", text: "x" } }))).toBe(DENIED);
  });

  it("follows size changes up to the maximum height", async () => {
    const { handle, host, sent } = setup();
    await handle({ jsonrpc: "2.0", method: "ui/notifications/size-changed", params: { height: 120.2 } });
    await handle({ jsonrpc: "2.0", method: "ui/notifications/size-changed", params: { height: 5000 } });
    await handle({ jsonrpc: "2.0", method: "ui/notifications/size-changed", params: { height: "x" } });
    await handle({ jsonrpc: "2.0", method: "notifications/message", params: { level: "info", data: "hi" } });
    expect(vi.mocked(host.resize).mock.calls).toEqual([[121], [600]]);
    expect(sent).toEqual([]);
  });
});

describe("chat drafts", () => {
  it("reach the message box listening under the chat's key only", () => {
    const got: string[] = [];
    expect(offerDraft("k1", "nobody")).toBe(false);
    const stop = onDraftOffered("k1", (t) => got.push(t));
    expect(offerDraft("k2", "other chat")).toBe(false);
    expect(offerDraft("k1", "hello")).toBe(true);
    stop();
    expect(offerDraft("k1", "gone")).toBe(false);
    expect(got).toEqual(["hello"]);
  });
});
