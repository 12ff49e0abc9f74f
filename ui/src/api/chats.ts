// Chats, messages, queue, files, models and MCP servers as a member uses them.

import { API, authHeaders, del, get, getAll, getPage, post, put, request } from "./client";
import type {
  ActionAnswer, BusyBehavior, Chat, ChatAction, ChatPage, FileRef, InputPart, McpServer, McpToken, MessagesPage, ModelConfig,
  QueuedMessage, SendResult, UsageStatus, User,
} from "./types";

export const me = (token?: string) => get<User>("/me", { token, quiet401: token !== undefined });

export interface ListChats { archived?: boolean; before?: string | null; limit?: number; parent?: string; q?: string }

/** One page of chats, newest first (the cursor of the next page comes in X-Next-Cursor). */
export async function listChats(q: ListChats = {}): Promise<ChatPage> {
  const p = new URLSearchParams();
  p.set("archived", String(q.archived ?? false));
  if (q.parent) p.set("parent_chat_id", q.parent);
  if (q.limit) p.set("limit", String(q.limit));
  if (q.before) p.set("before", q.before);
  if (q.q) p.set("q", q.q);
  const page = await getPage<Chat>(`/chats?${p}`);
  return { chats: page.items, next_cursor: page.next };
}

export const getChat = (id: string) => get<Chat>(`/chats/${id}`);
export const listMessages = (id: string) => get<MessagesPage>(`/chats/${id}/messages`);

export interface NewChat { content: string | InputPart[]; model_config_id?: string | null; mcp_server_ids?: string[] | null }
export const createChat = (body: NewChat) => post<Chat>("/chats", body);

export interface Send extends NewChat { busy_behavior?: BusyBehavior }
export const sendMessage = (id: string, body: Send) => post<SendResult>(`/chats/${id}/messages`, body);
export const editMessage = (id: string, messageId: number, content: string | InputPart[]) =>
  request<{ chat: Chat }>("PATCH", `/chats/${id}/messages/${messageId}`, { body: { content } });
export const interrupt = (id: string) => post<Chat>(`/chats/${id}/interrupt`);
export const archive = (id: string, archived: boolean) => post<void>(`/chats/${id}/${archived ? "archive" : "unarchive"}`);
export const deleteQueued = (id: string, q: number) => del(`/chats/${id}/queue/${q}`);
export const promoteQueued = (id: string, q: number) => post<{ message: QueuedMessage }>(`/chats/${id}/queue/${q}/promote`);
export const answerAction = (id: string, actionId: string, answer: ActionAnswer) => post<Chat>(`/chats/${id}/actions/${actionId}`, answer);
/** Every action of the chat with its decision: how each call that asked was answered. */
export const listActions = (id: string) => getAll<ChatAction>(`/chats/${id}/actions`);
/** Take back "always allow" for one tool: its calls ask again. */
export const revokeAllowedTool = (id: string, tool: string) => del<Chat>(`/chats/${id}/allowed-tools/${encodeURIComponent(tool)}`);

export function uploadFile(file: File): Promise<FileRef> {
  const form = new FormData();
  form.append("file", file, file.name);
  return request<FileRef>("POST", "/files", { form });
}
/** Files need the bearer token, so images are fetched and shown from a blob URL. */
export async function fileBlobUrl(fileId: string): Promise<string> {
  const r = await fetch(`${API}/files/${fileId}`, { headers: authHeaders() });
  if (!r.ok) throw new Error(`file ${fileId}: ${r.status}`);
  return URL.createObjectURL(await r.blob());
}

export const listModelConfigs = () => getAll<ModelConfig>("/model-configs");
export const listMcpServers = () => getAll<McpServer>("/mcp-servers");
export const getMcpToken = (id: string) => get<McpToken>(`/mcp-servers/${id}/token`);
export const startMcpOAuth = (id: string) => post<{ authorize_url: string }>(`/mcp-servers/${id}/oauth/start`);
export const usage = () => get<UsageStatus>("/usage");

export const vapidKey = () => get<{ public_key: string }>("/push/vapid-public-key");
export const pushSubscribe = (sub: PushSubscriptionJSON) => post("/push/subscriptions", sub);
export const pushUnsubscribe = (endpoint: string) => del("/push/subscriptions", { endpoint });
export const setCustomPrompt = (custom_prompt: string) => put("/me/custom-prompt", { custom_prompt });
