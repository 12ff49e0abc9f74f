import { describe, expect, it } from "vitest";
import type { ChatAction, Message, PendingAction } from "../src/api/types";
import { waitedFor } from "../src/chat/Actions";
import { pendingWords } from "../src/chat/Composer";
import { callCards, callState, cardKey, editedArgs, emptyChat, mergePart, reduce, splitToolName, turns, withHistory, withOutcomes, type ChatState } from "../src/chat/state";

const msg = (id: number, role: Message["role"], text: string): Message => ({
  id, chat_id: "c", role, content: [{ type: "text", text }], created_at: "", model_config_id: null, usage: null,
  context_limit: null, total_cost_micros: null, runtime_ms: null,
});

/** The outcome the card of call `id` shows (a chat with that one call). */
const onCall = (s: ChatState, id: string) => callCards(
  [{ ...msg(1, "assistant", ""), content: [{ type: "tool-call", tool_call_id: id, tool_name: "t" }] }], [], [], s.outcomes,
).outcomes.get(cardKey(1, id));

const question: PendingAction = {
  id: "a1", kind: "question", tool_call_id: "q1", tool_name: "ask_user_question", server: null, args: {},
  message: "Which?", schema: null, url: null, options: ["x", "y"], deadline: null, created_at: "",
};

describe("chat state", () => {
  it("keeps the actions a waiting chat announces until they are resolved or the chat moves on", () => {
    let s = reduce(emptyChat, { type: "status", chat_id: "c", status: "requires_action" });
    s = reduce(s, { type: "action_required", chat_id: "c", action: question });
    s = reduce(s, { type: "action_required", chat_id: "c", action: question });
    expect(s.actions).toEqual([question]);
    expect(reduce(s, { type: "action_resolved", chat_id: "c", action_id: "a1", decision: "accept" }).actions).toEqual([]);
    expect(reduce(s, { type: "status", chat_id: "c", status: "pending" }).actions).toEqual([]);
  });

  it("remembers how each call was answered, live and from the chat's actions after a reload", () => {
    const form: PendingAction = { ...question, id: "e1", kind: "elicitation", tool_call_id: "f1", tool_name: "s__register", server: "s" };
    let s = reduce(emptyChat, { type: "status", chat_id: "c", status: "running" });
    s = reduce(s, { type: "action_required", chat_id: "c", action: form });
    const live = reduce(s, { type: "action_resolved", chat_id: "c", action_id: "e1", decision: "timeout" });
    expect(live.outcomes).toEqual({ e1: { kind: "elicitation", decision: "timeout", editedArgs: null, tool_call_id: "f1", created_at: "" } });
    expect(onCall(live, "f1")).toEqual({ kind: "elicitation", decision: "timeout", editedArgs: null });
    expect(callState(null, onCall(live, "f1"), { live: true }).label).toBe("not answered in time");
    // After a reload the stream has no event: the recorded decision says the same.
    const listed: ChatAction = { ...form, state: "cancelled", decision: "timeout", edited_args: null, resolved_at: "" };
    const reloaded = withOutcomes(emptyChat, [listed]);
    expect(callState({ result: { text: "not registered: cancel" } }, onCall(reloaded, "f1"))).toEqual({
      label: "not answered in time", ran: true, note: "Nobody answered the server's form in time: it was cancelled.",
    });
    // A cancel is a cancel, not a timeout.
    const cancelled = reduce(s, { type: "action_resolved", chat_id: "c", action_id: "e1", decision: "cancel" });
    expect(callState({ result: { text: "x" } }, onCall(cancelled, "f1")).label).toBe("done");
  });

  it("reads a call answered while its step's other questions wait as approved or answered, not as 'no result'", () => {
    expect(callState(null, { kind: "tool_approval", decision: "approve" })).toMatchObject({ label: "approved", ran: false });
    expect(callState(null, { kind: "elicitation", decision: "accept" })).toMatchObject({ label: "answered", ran: false });
    // Once its result is there it is done like any call.
    expect(callState({ result: "ok" }, { kind: "tool_approval", decision: "approve" }).label).toBe("done");
    expect(callState(null, null).label).toBe("no result");
  });

  it("reads a denied, declined, cancelled or timed-out call as that, with no run time, never as failed", () => {
    const denied = { tool_call_id: "e1", tool_name: "execute", result: { error: "Denied by the user: the tool call was not run." }, is_error: true };
    expect(callState(denied, { kind: "tool_approval", decision: "deny" })).toEqual({ label: "denied", ran: false, note: "You denied this call: it did not run." });
    expect(callState(null, { kind: "tool_approval", decision: "deny" }).label).toBe("denied");
    expect(callState({ is_error: true, result: { error: "x" } }, { kind: "tool_approval", decision: "cancel" }).label).toBe("cancelled");
    expect(callState({ is_error: true, result: { error: "x" } }, { kind: "client_tool", decision: "timeout" }).label).toBe("timed out");
    expect(callState({ is_error: true, result: { error: "x" } }, { kind: "client_tool", decision: "decline" }).label).toBe("declined");
    // Without the chat's actions (an older server), a result that names its decision still reads right.
    expect(callState({ is_error: true, result: { error: "The user declined to answer.", decision: "decline" } }, null).label).toBe("declined");
    // A real failure is still one; an approved call that ran is done.
    expect(callState({ is_error: true, result: { error: "boom" } }, null)).toEqual({ label: "failed", ran: true, note: null });
    expect(callState({ result: { ran: 1 } }, { kind: "tool_approval", decision: "approve" }).label).toBe("done");
    expect(callState(null, null, { awaiting: true }).label).toBe("waiting for your answer");
  });

  it("records an answer announced after the status change that ended the wait", () => {
    let s = reduce(emptyChat, { type: "status", chat_id: "c", status: "requires_action" });
    s = reduce(s, { type: "action_required", chat_id: "c", action: { ...question, kind: "tool_approval", tool_call_id: "e1", tool_name: "execute" } });
    // The stream says the chat is pending (the last answer) before it says how it was answered.
    s = reduce(s, { type: "status", chat_id: "c", status: "pending" });
    s = reduce(s, { type: "action_resolved", chat_id: "c", action_id: "a1", decision: "deny" });
    expect(callState({ is_error: true, result: { error: "x" } }, onCall(s, "e1")).label).toBe("denied");
  });

  it("shows the arguments an edited approval ran with", () => {
    const ran = { result: { edited_args: { x: 2 }, result: { ran: { x: 2 } } } };
    expect(editedArgs(ran, null)).toEqual({ x: 2 });
    // Approved here with edits, before its result arrives.
    expect(editedArgs(null, { kind: "tool_approval", decision: "approve", editedArgs: { x: 3 } })).toEqual({ x: 3 });
    expect(editedArgs({ result: { ran: 1 } }, { kind: "tool_approval", decision: "approve", editedArgs: null })).toBeNull();
    let s = reduce(emptyChat, { type: "status", chat_id: "c", status: "requires_action" });
    s = reduce(s, { type: "action_required", chat_id: "c", action: { ...question, kind: "tool_approval", tool_call_id: "e1", tool_name: "execute" } });
    s = reduce(s, { type: "action_resolved", chat_id: "c", action_id: "a1", decision: "approve", mine: true, edited_args: { x: 3 } });
    expect(editedArgs(null, onCall(s, "e1"))).toEqual({ x: 3 });
  });

  it("names what the composer's cancel button cancels", () => {
    const approval = (id: string): PendingAction => ({ ...question, id, kind: "tool_approval", tool_name: "s__echo" });
    expect(pendingWords([approval("1")]).cancel).toBe("Cancel the pending approval");
    expect(pendingWords([approval("1"), approval("2")]).cancel).toBe("Cancel all 2 pending approvals");
    expect(pendingWords([question]).cancel).toBe("Cancel the pending question");
    expect(pendingWords([question, approval("2")]).cancel).toBe("Cancel all 2 pending requests");
    expect(pendingWords([{ ...question, kind: "client_tool" }]).answer).toBe("client");
    expect(pendingWords([approval("1")]).cancelAndSend).toBe("Cancel the pending approval and send");
  });

  it("joins text deltas and a tool call's argument deltas", () => {
    let live = mergePart([], { type: "text", text: "Hel" });
    live = mergePart(live, { type: "text", text: "lo" });
    live = mergePart(live, { type: "tool-call", tool_call_id: "1", tool_name: "s__echo", args_delta: "{\"te" });
    live = mergePart(live, { type: "tool-call", tool_call_id: "1", tool_name: "s__echo", args_delta: "xt\":1}" });
    expect(live).toEqual([
      { type: "text", text: "Hello" },
      { type: "tool-call", tool_call_id: "1", tool_name: "s__echo", args_delta: "{\"text\":1}" },
    ]);
    live = mergePart(live, { type: "tool-call", tool_call_id: "1", tool_name: "s__echo", args: { text: 1 } });
    expect(live[1]).toMatchObject({ args: { text: 1 }, args_delta: null });
  });

  it("drops the streamed parts once their step is persisted", () => {
    let s = reduce(emptyChat, { type: "message", chat_id: "c", message: msg(1, "user", "hi") });
    s = reduce(s, { type: "message_part", chat_id: "c", role: "assistant", part: { type: "text", text: "he" } });
    expect(s.live.length).toBe(1);
    s = reduce(s, { type: "message", chat_id: "c", message: msg(2, "assistant", "hello") });
    expect(s.live).toEqual([]);
    expect(s.messages.map((m) => m.id)).toEqual([1, 2]);
  });

  it("shows the whole answer of a chat joined mid-answer: the history, then the parts in flight, then live parts", () => {
    // The stream's snapshot of a chat on its second turn (docs/api.md, "The chat stream").
    let s = reduce(emptyChat, { type: "status", chat_id: "c", status: "running" });
    for (const m of [msg(1, "user", "hi"), msg(2, "assistant", "hello"), msg(3, "user", "count")]) {
      s = reduce(s, { type: "message", chat_id: "c", message: m });
    }
    for (const t of ["tok0 ", "tok1 ", "tok2 "]) s = reduce(s, { type: "message_part", chat_id: "c", role: "assistant", part: { type: "text", text: t } });
    // An older answer delivered again (a resync) does not drop the parts in flight.
    s = reduce(s, { type: "message", chat_id: "c", message: msg(2, "assistant", "hello") });
    s = reduce(s, { type: "message_part", chat_id: "c", role: "assistant", part: { type: "text", text: "tok3" } });
    expect(s.live).toEqual([{ type: "text", text: "tok0 tok1 tok2 tok3" }]);
  });

  it("says how long an action has waited in words", () => {
    expect([0, 59_000, 60_000, 5 * 60_000, 60 * 60_000, 125 * 60_000, 49 * 3_600_000].map(waitedFor)).toEqual([
      "less than a minute", "less than a minute", "1 minute", "5 minutes", "1 hour", "2 hours 5 minutes", "2 days",
    ]);
  });

  it("asks for a reload when an older message arrives (an edit replaced the history)", () => {
    let s = reduce(emptyChat, { type: "message", chat_id: "c", message: msg(3, "user", "a") });
    s = reduce(s, { type: "message", chat_id: "c", message: msg(3, "user", "a") });
    expect(s.needsReload).toBe(false);
    s = reduce(s, { type: "message", chat_id: "c", message: msg(1, "user", "old") });
    expect(s.needsReload).toBe(true);
  });

  it("keeps an answer that streamed in while the history was re-read after an edit", () => {
    // Before the edit: 1 user, 2 assistant. The edit soft-deletes them and adds 3 (user); the
    // answer 4 is persisted and streamed before the re-read (taken when only 3 existed) arrives.
    let s = reduce(emptyChat, { type: "message", chat_id: "c", message: msg(1, "user", "q") });
    s = reduce(s, { type: "message", chat_id: "c", message: msg(2, "assistant", "a") });
    s = reduce(s, { type: "message", chat_id: "c", message: msg(3, "user", "better q") });
    s = reduce(s, { type: "message", chat_id: "c", message: msg(4, "assistant", "better a") });
    s = withHistory(s, [msg(3, "user", "better q")], []);
    expect(s.messages.map((m) => m.id)).toEqual([3, 4]);
    // Replaced messages stay gone, however they arrived.
    expect(withHistory(s, [msg(3, "user", "better q"), msg(4, "assistant", "better a")], []).messages.map((m) => m.id)).toEqual([3, 4]);
  });

  it("groups messages into turns and splits MCP tool names", () => {
    const t = turns([msg(1, "user", "q"), msg(2, "assistant", "a"), msg(3, "tool", "r"), msg(4, "user", "q2")]);
    expect(t.map((x) => [x.user?.id, x.replies.map((r) => r.id)])).toEqual([[1, [2, 3]], [4, []]]);
    expect(splitToolName("tests__echo")).toEqual({ server: "tests", tool: "echo" });
    expect(splitToolName("spawn_agent")).toEqual({ server: null, tool: "spawn_agent" });
  });
});
