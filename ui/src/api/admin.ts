// Admin calls (docs/api.md): providers and their connection test, model configs, MCP servers,
// templates, users and tokens, spend and limits. Shapes mirror src/chatd/api/schemas.py.

import { ApiError, del, get, patch, post, put } from "./client";
import type { Availability, McpServerStatus, ModelConfig, User } from "./types";

export type ProviderKind = "openai-compatible" | "openai" | "anthropic" | "google";
export const PROVIDER_KINDS: { kind: ProviderKind; label: string; baseUrl: string; needsKey: boolean }[] = [
  { kind: "openai-compatible", label: "OpenAI-compatible (Ollama, vLLM, llama.cpp, …)", baseUrl: "http://localhost:11434/v1", needsKey: false },
  { kind: "openai", label: "OpenAI", baseUrl: "", needsKey: true },
  { kind: "anthropic", label: "Anthropic", baseUrl: "", needsKey: true },
  { kind: "google", label: "Google Gemini", baseUrl: "", needsKey: true },
];

/** A provider record: `name` is unique (several providers may share a kind); `provider` is the kind. */
export interface Provider {
  id: string; name: string; provider: ProviderKind; display_name: string; api_key_set: boolean; base_url: string | null;
  enabled: boolean; created_at: string; updated_at: string;
}
export interface ProviderIn { provider?: ProviderKind; name?: string; display_name?: string | null; api_key?: string | null; base_url?: string | null; enabled?: boolean }

export interface DiscoveredModel { id: string; display_name: string; context_limit: number | null }
export interface ProviderCheck { ok: boolean; models: DiscoveredModel[]; error: { message: string; status: number | null } | null }

export const listProviders = () => get<Provider[]>("/providers");
export const createProvider = (body: ProviderIn) => post<Provider>("/providers", body);
export const updateProvider = (id: string, body: ProviderIn) => patch<Provider>(`/providers/${id}`, body);
export const deleteProvider = (id: string) => del(`/providers/${id}`);
export const testProvider = (body: { provider: ProviderKind; base_url?: string | null; api_key?: string | null; provider_id?: string }) =>
  post<ProviderCheck>("/providers/test", body);
export const providerModels = (id: string) => get<ProviderCheck>(`/providers/${id}/models`);

export interface Pricing { input: number | null; output: number | null; cache_read: number | null; cache_write: number | null; reasoning?: number | null }
export interface ModelConfigIn {
  provider_id?: string; model?: string; display_name?: string | null; context_limit?: number; compression_threshold?: number;
  is_default?: boolean; enabled?: boolean; options?: { max_output_tokens?: number | null; images?: boolean }; pricing?: Partial<Pricing>;
}
export const listModelConfigs = () => get<ModelConfig[]>("/model-configs");
export const createModelConfig = (body: ModelConfigIn) => post<ModelConfig>("/model-configs", body);
export const updateModelConfig = (id: string, body: ModelConfigIn) => patch<ModelConfig>(`/model-configs/${id}`, body);
export const deleteModelConfig = (id: string) => del(`/model-configs/${id}`);

/** A provider name not taken yet: the kind, else the kind with a number ("openai-compatible-2"). */
/** The server refuses an OpenAI-compatible provider without a base URL; the others default to the
 * provider's public API. The form's marking and hint say the same. */
export function needsBaseUrl(kind: ProviderKind): boolean {
  return kind === "openai-compatible";
}

export function baseUrlHint(kind: ProviderKind): string {
  return needsBaseUrl(kind) ? "Needed: the server's OpenAI-compatible API, usually ending in /v1." : "Empty uses the provider's public API.";
}

export function freeProviderName(kind: ProviderKind, providers: Provider[]): string {
  const taken = new Set(providers.map((p) => p.name));
  if (!taken.has(kind)) return kind;
  let n = 2;
  while (taken.has(`${kind}-${n}`)) n++;
  return `${kind}-${n}`;
}

export type Transport = "streamable_http" | "sse" | "stdio";
export type AuthType = "none" | "api_key" | "custom_headers" | "oauth2";
export interface OAuth2 { client_id: string | null; client_secret_set?: boolean; authorize_url: string | null; token_url: string | null; scopes: string | null; grant_type: string }
export interface AdminMcpServer {
  id: string; slug: string; display_name: string; description: string; url: string | null; transport: Transport | null;
  command: string | null; args: string[] | null; auth_type: AuthType; api_key_header: string | null; api_key_set: boolean;
  custom_header_names: string[] | null; oauth2: OAuth2 | null; tool_allow_list: string[]; tool_deny_list: string[];
  enabled: boolean; availability: Availability; forward_identity: boolean; env_names: string[] | null;
  connect_timeout_s: number | null; call_timeout_s: number | null; created_at: string; updated_at: string;
  approval?: Approval; approval_overrides?: Record<string, Approval>;
  status: McpServerStatus;
}
export type Approval = "never" | "always" | "unless_read_only";
export type McpServerIn = Partial<{
  slug: string; display_name: string; description: string; url: string; transport: Transport; command: string | null;
  args: string[]; auth_type: AuthType; api_key_header: string; api_key_value: string | null;
  custom_headers: Record<string, string>; oauth2: Partial<{ client_id: string | null; client_secret: string | null; authorize_url: string | null; token_url: string | null; scopes: string | null; grant_type: string }>;
  tool_allow_list: string[]; tool_deny_list: string[]; enabled: boolean; availability: Availability; forward_identity: boolean;
  env: Record<string, string | null>; connect_timeout_s: number | null; call_timeout_s: number | null;
  approval: Approval; approval_overrides: Record<string, Approval>;
}>;
export interface McpToolInfo { name: string; original_name: string; description: string }
export interface McpCheck { ok: boolean; tools: McpToolInfo[]; error: { code: string; message: string; status: number | null } | null }

export const listMcpServers = () => get<AdminMcpServer[]>("/mcp-servers");
export const createMcpServer = (body: McpServerIn) => post<AdminMcpServer>("/mcp-servers", body);
export const updateMcpServer = (id: string, body: McpServerIn) => patch<AdminMcpServer>(`/mcp-servers/${id}`, body);
export const deleteMcpServer = (id: string) => del(`/mcp-servers/${id}`);
export const checkMcpServer = (id: string) => get<McpCheck>(`/mcp-servers/${id}/tools`);

export interface Template {
  id: string; name: string; display_name: string; description: string; provisioner: string; git_url: string | null;
  git_ref: string | null; source_path: string | null; init_script: string; allow_outside: boolean; deprecated: boolean;
}
export type TemplateIn = Partial<Omit<Template, "id" | "deprecated" | "provisioner">>;
export const listTemplates = (includeDeprecated = false) => get<Template[]>(`/templates${includeDeprecated ? "?include_deprecated=true" : ""}`);
export const createTemplate = (body: TemplateIn) => post<Template>("/templates", body);
export const updateTemplate = (id: string, body: TemplateIn & { deprecated?: boolean }) => patch<Template>(`/templates/${id}`, body);
export const deleteTemplate = (id: string) => del(`/templates/${id}`);

export interface ApiToken { id: string; name: string; created_at: string; last_used_at: string | null }
/** Every user. A server without `GET /users` (older) still lists them through the spend report. */
export async function listUsers(): Promise<User[]> {
  try {
    return await get<User[]>("/users");
  } catch (e) {
    if (e instanceof ApiError && (e.status === 404 || e.status === 405)) return (await spendByUser()).users.map((u) => u.user);
    throw e;
  }
}
export const createUser = (body: { username: string; role: "admin" | "member" }) => post<User>("/users", body);
export const setUserDisabled = (userId: string, disabled: boolean) => patch<User>(`/users/${userId}`, { disabled });
export const listUserTokens = (userId: string) => get<ApiToken[]>(`/users/${userId}/tokens`);
export const createToken = (userId: string, name: string) => post<{ token: string }>(`/users/${userId}/tokens`, { name });
export const revokeToken = (id: string) => del(`/tokens/${id}`);

export type Period = "day" | "week" | "month";
export interface UserSpend {
  user: User; period: Period; period_start: string; period_end: string; spent_micros: number;
  limit_micros: number | null; limit_scope: "user" | "global" | null;
}
export interface Spend { global_limit: { period: Period; limit_micros: number } | null; users: UserSpend[] }
export const spendByUser = () => get<Spend>("/usage/users");
export const setLimit = (body: { scope: "global" | "user"; user_id?: string; period: Period; limit_micros: number }) =>
  put("/usage-limits", body);
export const removeLimit = (scope: "global" | "user", userId?: string) =>
  del(`/usage-limits?scope=${scope}${userId ? `&user_id=${encodeURIComponent(userId)}` : ""}`);

/** Dollars for a person from micro-dollars. */
export function dollars(micros: number | null | undefined): string {
  if (micros === null || micros === undefined) return "—";
  const d = micros / 1e6;
  return "$" + (d >= 100 ? d.toFixed(0) : d >= 1 ? d.toFixed(2) : d.toFixed(4).replace(/0+$/, "").replace(/\.$/, ".00"));
}
