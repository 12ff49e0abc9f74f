// The public API's shapes (src/chatd/api/schemas.py, docs/api.md). Only what the UI reads.

export type Role = "admin" | "member";
export interface User { id: string; username: string; role: Role; created_at: string; disabled?: boolean; disabled_at?: string | null }

export type ChatStatus = "pending" | "running" | "waiting" | "error" | "requires_action";

/** What a chat in `requires_action` waits for (docs/api.md, "Human in the loop"). */
export type ActionKind = "tool_approval" | "question" | "client_tool" | "elicitation";
export interface PendingAction {
  id: string; kind: ActionKind; tool_call_id: string; tool_name: string; server: string | null;
  args: Record<string, unknown>; message: string | null; schema: Record<string, unknown> | null;
  url: string | null; options: string[] | null; deadline: string | null; created_at: string;
}
export type Decision = "approve" | "deny" | "accept" | "decline" | "cancel";
/** One of a chat's actions with what became of it (`GET /chats/{id}/actions`). `timeout`: nobody
 * answered in time (a client tool's deadline, an MCP server's form). */
export interface ChatAction extends PendingAction {
  state: "pending" | "answered" | "done" | "cancelled"; decision: Decision | "timeout" | null;
  edited_args: Record<string, unknown> | null; resolved_at: string | null;
}
export interface ActionAnswer { decision: Decision; args?: Record<string, unknown>; content?: unknown; result?: unknown; always_allow?: boolean }

export interface Chat {
  id: string;
  owner_id: string;
  title: string;
  status: ChatStatus;
  last_error: string | null;
  last_model_config_id: string | null;
  workspace_id: string | null;
  parent_chat_id: string | null;
  root_chat_id: string | null;
  mcp_server_ids: string[];
  archived: boolean;
  created_at: string;
  updated_at: string;
  // Added by the API when it knows them; the UI degrades without them.
  queued_count?: number;
  /** Of `queued_count`, the messages sent to steer the running answer. */
  steering_count?: number;
  pending_actions?: PendingAction[];
  allowed_tools?: string[];
}

export interface ChatPage { chats: Chat[]; next_cursor: string | null }

export interface TextPart { type: "text"; text: string }
export interface ReasoningPart { type: "reasoning"; text: string }
export interface ToolCallPart {
  type: "tool-call"; tool_call_id: string; tool_name: string; args?: Record<string, unknown>;
  args_delta?: string | null; provider_executed?: boolean;
}
/** A tool result's MCP App view (a `ui://` resource on the tool's server). */
export interface McpAppLink { server_id: string; resource_uri: string; tool: string }

export interface ToolResultPart {
  type: "tool-result"; tool_call_id: string; tool_name: string; result?: unknown; is_error?: boolean; provider_executed?: boolean;
  app?: McpAppLink | null;
  /** How long the tool ran (null: it did not run, or from before this was kept). */
  duration_ms?: number | null;
}
export interface FilePart { type: "file"; file_id: string; media_type: string; name?: string | null }
export interface SourcePart { type: "source"; url: string; title?: string | null }
export interface ToolProgressPart {
  type: "tool-progress"; tool_call_id: string; tool_name: string; progress: number; total?: number | null; message?: string | null;
}
export interface NoticePart { type: "notice"; level: "info" | "warning" | "error"; text: string; source?: string | null }
export type Part = TextPart | ReasoningPart | ToolCallPart | ToolResultPart | FilePart | SourcePart | ToolProgressPart | NoticePart;
export type InputPart = TextPart | FilePart;

export interface Usage {
  input_tokens: number; output_tokens: number; total_tokens: number; reasoning_tokens: number;
  cache_creation_tokens: number; cache_read_tokens: number;
}

export interface Message {
  id: number;
  chat_id: string;
  role: "system" | "user" | "assistant" | "tool";
  content: Part[];
  created_at: string;
  model_config_id: string | null;
  usage: Usage | null;
  context_limit: number | null;
  total_cost_micros: number | null;
  runtime_ms: number | null;
}

/** `steer`: sent to steer the running turn; it joins that turn at its next step instead of waiting. */
export interface QueuedMessage { id: number; chat_id: string; content: Part[]; created_at: string; steer?: boolean }
export interface MessagesPage { messages: Message[]; queued_messages: QueuedMessage[] }

export type BusyBehavior = "queue" | "interrupt" | "steer" | "reject";
export interface SendResult { queued: boolean; message: Message | null; queued_message: QueuedMessage | null; chat: Chat }

/** `provider` is the kind of the provider the model runs on; `provider_name` its (unique) name. */
export interface ModelConfig {
  id: string; provider_id: string; provider: string; provider_name: string; provider_display_name?: string; model: string; display_name: string; context_limit: number;
  compression_threshold: number; is_default: boolean; enabled: boolean;
  options: Record<string, unknown>; pricing: Record<string, number | null>;
  created_at: string; updated_at: string;
}

export type Availability = "force_on" | "default_on" | "default_off";
// What the last attempt to reach a server said (any replica); `reason` is for admins only.
export interface McpServerStatus {
  state: "unknown" | "connected" | "failing" | "unauthorized"; reason: string | null;
  last_error_at: string | null; last_connected_at: string | null; checked_at: string | null; needs_authorization: boolean;
  /** Tools the last successful connect or check listed (after the allow/deny lists). */
  tool_count?: number | null;
}
export interface McpServer {
  id: string; slug: string; display_name: string; description: string; auth_type: string;
  enabled: boolean; availability: Availability; oauth2?: { grant_type: string } | null; status?: McpServerStatus;
  [more: string]: unknown;
}
export interface McpToken { connected: boolean; expires_at: string | null }

export interface FileRef { id: string; media_type: string; size: number }

export interface UsageStatus { period: string | null; period_end: string | null; spent_micros: number; limit_micros: number | null }

// Stream events (GET /chats/{id}/stream), discriminated by `type`.
export type StreamEvent =
  | { type: "status"; chat_id: string; status: ChatStatus }
  | { type: "message_part"; chat_id: string; role: string; part: Part }
  | { type: "message"; chat_id: string; message: Message }
  | { type: "queue_update"; chat_id: string; queued_messages: QueuedMessage[] }
  | { type: "retry"; chat_id: string; attempt: number; delay_ms: number; error: string; retrying_at: string }
  | { type: "error"; chat_id: string; message: string; detail?: Record<string, unknown> }
  | { type: "action_required"; chat_id: string; action: PendingAction }
  | {
    type: "action_resolved"; chat_id: string; action_id: string; decision: string;
    /** The UI's own: answered on this page (with the edited arguments it approved, if any). */
    mine?: boolean; edited_args?: Record<string, unknown> | null;
  };

export interface WatchEvent { kind: string; chat: Chat }
