import type { ActionKind, Chat, ChatStatus } from "../api/types";

// "waiting" (the API's word: waiting for the person) read as "still working" to new users: show "idle".
// `requires_action` is the API's word for a chat that waits for its person (or its client).
const LABEL: Record<ChatStatus, string> = {
  pending: "pending", running: "running", waiting: "idle", error: "error", requires_action: "waiting for you",
};

/** A running call that waits on the person (an MCP server's form): the chat is `running`, but
 * what it waits for is them, as in `requires_action`. */
export function waitsOnUser(status: ChatStatus | null | undefined, pending: number): boolean {
  return status === "running" && pending > 0;
}

/** The status in words: what the chat waits for is its person, unless all it waits for is the
 * result of a tool its client (an IDE, a script) runs. */
export function statusLabel(status: ChatStatus, kinds: ActionKind[] = []): string {
  if (waitsOnUser(status, kinds.length)) return "waiting for you";
  if (status === "requires_action" && kinds.length > 0 && kinds.every((k) => k === "client_tool")) return "waiting for the client";
  return LABEL[status] ?? status;
}

/** The chat's status in words (colour is only a second cue); the API's value stays in the title. */
export function StatusBadge({ status, kinds = [] }: { status: ChatStatus; kinds?: ActionKind[] }) {
  if (waitsOnUser(status, kinds.length)) {
    return <span class="badge status-requires_action" title="Status: running (a tool's form waits for you)">{statusLabel(status, kinds)}</span>;
  }
  return <span class={`badge status-${status}`} title={`Status: ${status}`}>{statusLabel(status, kinds)}</span>;
}

/** What waits in the chat's queue, in words: `queued_count` counts steering messages too, and a
 * steering message joins the running answer rather than waiting for it to end. */
export function queueBadges(chat: Pick<Chat, "queued_count" | "steering_count">): string[] {
  const steering = Math.max(0, chat.steering_count ?? 0);
  const queued = Math.max(0, (chat.queued_count ?? 0) - steering);
  return [...(queued ? [`${queued} queued`] : []), ...(steering ? [`${steering} steering`] : [])];
}

export function ChatBadges({ chat }: { chat: Chat }) {
  return (
    <span class="badges">
      <StatusBadge status={chat.status} kinds={(chat.pending_actions ?? []).map((a) => a.kind)} />
      {queueBadges(chat).map((b) => <span key={b} class="badge">{b}</span>)}
    </span>
  );
}
