import type { Chat, ChatStatus } from "../api/types";

// "waiting" (the API's word: waiting for the person) read as "still working" to new users: show "idle".
const LABEL: Record<ChatStatus, string> = {
  pending: "pending", running: "running", waiting: "idle", error: "error", requires_action: "requires action",
};

/** The chat's status in words (colour is only a second cue); the API's value stays in the title. */
export function StatusBadge({ status }: { status: ChatStatus }) {
  return <span class={`badge status-${status}`} title={`Status: ${status}`}>{LABEL[status] ?? status}</span>;
}

export function ChatBadges({ chat }: { chat: Chat }) {
  return (
    <span class="badges">
      <StatusBadge status={chat.status} />
      {!!chat.queued_count && <span class="badge">{chat.queued_count} queued</span>}
    </span>
  );
}
