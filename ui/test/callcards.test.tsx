// Call ids are not unique in a chat: some OpenAI-compatible providers send `call_1` every step. Each
// result, wait and decision belongs to one call's card (QA: an earlier card showed a later result,
// and one denial made every earlier `call_1` card read "denied" after a reload).
import { render } from "preact";
import { afterEach, describe, expect, it } from "vitest";
import type { ChatAction, Message, Part, PendingAction, StreamEvent } from "../src/api/types";
import { Messages } from "../src/chat/Messages";
import { callCards, cardKey, emptyChat, micros, reduce, withOutcomes, type ChatState } from "../src/chat/state";

const T = (s: number) => `2026-11-30T10:00:${String(s).padStart(2, "0")}.000123Z`;

const message = (id: number, role: Message["role"], content: Part[], at = T(id)): Message => ({
  id, chat_id: "c", role, content, created_at: at, model_config_id: null, usage: null,
  context_limit: null, total_cost_micros: null, runtime_ms: null,
});
const call = (args: Record<string, unknown>): Part => ({ type: "tool-call", tool_call_id: "call_1", tool_name: "notes__delete_note", args });
const result = (text: string, extra: Record<string, unknown> = {}): Part => ({
  type: "tool-result", tool_call_id: "call_1", tool_name: "notes__delete_note", result: { text }, duration_ms: 5, ...extra,
});
const approval = (id: string, at: string): PendingAction => ({
  id, kind: "tool_approval", tool_call_id: "call_1", tool_name: "notes__delete_note", server: "notes", args: {},
  message: null, schema: null, url: null, options: null, deadline: null, created_at: at,
});
const listed = (a: PendingAction, decision: ChatAction["decision"]): ChatAction => ({
  ...a, state: "done", decision, edited_args: null, resolved_at: a.created_at,
});

/** Three turns, each calling `call_1`: the first approved (always allow), the second run unasked. */
function history(): Message[] {
  return [
    message(1, "user", [{ type: "text", text: "delete a" }]),
    message(2, "assistant", [call({ id: "a" })]),
    message(3, "tool", [result("deleted a")]),
    message(4, "assistant", [{ type: "text", text: "done a" }]),
    message(5, "user", [{ type: "text", text: "delete b" }]),
    message(6, "assistant", [call({ id: "b" })]),
    message(7, "tool", [result("deleted b")]),
    message(8, "assistant", [{ type: "text", text: "done b" }]),
    message(9, "user", [{ type: "text", text: "delete c" }]),
    message(10, "assistant", [call({ id: "c" })]),
  ];
}

let root: HTMLElement | null = null;
afterEach(() => {
  if (root) render(null, root);
  root = null;
});

/** The chat as the page shows it: each tool card's state badge and result text, oldest first. */
function show(s: ChatState, durations = new Map<string, number[]>()): { state: string; text: string }[] {
  root = document.createElement("div");
  render(
    <Messages messages={s.messages} live={s.live} running={s.status === "running"} durations={durations} onEdit={() => undefined}
      editing={null} renderEditor={() => null} canEdit waiting={s.actions} outcomes={s.outcomes} />,
    root,
  );
  return [...root.querySelectorAll(".tool-card")].map((card) => ({
    state: card.querySelector(".badge")?.textContent ?? "",
    text: [...card.querySelectorAll("details")].map((d) => d.textContent).join(" "),
  }));
}

function play(events: StreamEvent[], s: ChatState = emptyChat): ChatState {
  return events.reduce(reduce, s);
}
const messagesOf = (ms: Message[]): StreamEvent[] => ms.map((m) => ({ type: "message", chat_id: "c", message: m }));

describe("tool call cards when a provider reuses call ids", () => {
  it("shows each call's own result", () => {
    const cards = show(play(messagesOf([...history(), message(11, "tool", [result("deleted c")])])));
    expect(cards.map((c) => c.state)).toEqual(["done", "done", "done"]);
    expect(cards[0].text).toContain("deleted a");
    expect(cards[0].text).not.toContain("deleted b");
    expect(cards[1].text).toContain("deleted b");
    expect(cards[2].text).toContain("deleted c");
  });

  it("gives a result streaming now to the newest call, and the older calls keep theirs", () => {
    const s = play([
      { type: "status", chat_id: "c", status: "running" },
      ...messagesOf(history().slice(0, 9)),
      { type: "message_part", chat_id: "c", role: "assistant", part: call({ id: "c" }) },
      { type: "message_part", chat_id: "c", role: "tool", part: result("deleted c") },
    ]);
    const cards = show(s);
    expect(cards.map((c) => c.text.includes("deleted a") ? "a" : c.text.includes("deleted b") ? "b" : c.text.includes("deleted c") ? "c" : "-"))
      .toEqual(["a", "b", "c"]);
  });

  it("says only the newest call waits for an answer", () => {
    // The first turn was stopped before its call had a result: it never waits again.
    const s = play([
      ...messagesOf(history().filter((m) => m.id !== 3)),
      { type: "status", chat_id: "c", status: "requires_action" },
      { type: "action_required", chat_id: "c", action: approval("x3", T(10)) },
    ]);
    expect(show(s).map((c) => c.state)).toEqual(["no result", "done", "waiting for your answer"]);
  });

  it("puts a denial on the call that asked, live and after a reload, not on earlier calls with its id", () => {
    const first = approval("x1", T(2));
    const third = approval("x3", T(10));
    // Live: the third call is denied on this page.
    let s = play([
      ...messagesOf(history()),
      { type: "status", chat_id: "c", status: "requires_action" },
      { type: "action_required", chat_id: "c", action: third },
      { type: "action_resolved", chat_id: "c", action_id: "x3", decision: "deny" },
      { type: "message", chat_id: "c", message: message(11, "tool", [result("Denied by the user", { is_error: true, duration_ms: null })]) },
    ]);
    s = withOutcomes(s, [listed(first, "approve"), listed(third, "deny")]);
    expect(show(s).map((c) => c.state)).toEqual(["done", "done", "denied"]);
    // A reload: the chat's actions, listed oldest first.
    const reloaded = withOutcomes(play(messagesOf([...s.messages])), [listed(first, "approve"), listed(third, "deny")]);
    expect(show(reloaded).map((c) => c.state)).toEqual(["done", "done", "denied"]);
    // Listed in any order, the same.
    const shuffled = withOutcomes(play(messagesOf([...s.messages])), [listed(third, "deny"), listed(first, "approve")]);
    expect(show(shuffled).map((c) => c.state)).toEqual(["done", "done", "denied"]);
  });

  it("puts an earlier denial on its own call, not on a later call with the same id that ran", () => {
    const ms = [
      message(1, "user", [{ type: "text", text: "delete a" }]),
      message(2, "assistant", [call({ id: "a" })]),
      message(3, "tool", [result("Denied by the user", { is_error: true, duration_ms: null })]),
      message(4, "user", [{ type: "text", text: "delete b" }]),
      message(5, "assistant", [call({ id: "b" })]),
      message(6, "tool", [result("deleted b")]),
    ];
    const s = withOutcomes(play(messagesOf(ms)), [listed(approval("x1", T(2)), "deny"), listed(approval("x2", T(5)), "approve")]);
    expect(show(s).map((c) => c.state)).toEqual(["denied", "done"]);
  });

  it("gives a call's second ask (a server's form while it runs) to that call, the newest action winning", () => {
    const form = (id: string, at: string, decision: ChatAction["decision"]): ChatAction => ({
      ...listed(approval(id, at), decision), kind: "elicitation",
    });
    const ms = [...history().slice(0, 6), message(7, "tool", [result("not registered")])];
    // Call b (message 6) was approved, then its server asked a form nobody answered in time.
    const cards = callCards(ms, [], [], withOutcomes(emptyChat, [
      listed(approval("x1", T(2)), "approve"), listed(approval("x2", T(6)), "approve"), form("f2", T(6).replace(".000123", ".5"), "timeout"),
    ]).outcomes);
    expect(cards.outcomes.get(cardKey(2, "call_1"))?.decision).toBe("approve");
    expect(cards.outcomes.get(cardKey(6, "call_1"))).toMatchObject({ kind: "elicitation", decision: "timeout" });
  });

  it("measures run times per call", () => {
    const ms = [...history(), message(11, "tool", [result("deleted c")])].map((m) => ({
      ...m, content: m.content.map((p) => (p.type === "tool-result" ? { ...p, duration_ms: null } : p)),
    }));
    // Only the last two ran while the page was open.
    const cards = callCards(ms, [], [], {}, new Map([["call_1", [20, 30]]]));
    expect(cards.durations.get(cardKey(2, "call_1"))).toBeUndefined();
    expect(cards.durations.get(cardKey(6, "call_1"))).toBe(20);
    expect(cards.durations.get(cardKey(10, "call_1"))).toBe(30);
  });

  it("reads API times to the microsecond, with or without a fraction", () => {
    expect(micros("2026-11-30T10:00:01.000123Z") - micros("2026-11-30T10:00:01Z")).toBe(123);
    expect(micros("2026-11-30T10:00:01.5+00:00") - micros("2026-11-30T10:00:01.000123Z")).toBe(499_877);
    expect(Number.isNaN(micros(""))).toBe(true);
  });
});
