// The one place that talks HTTP to chatd: the bearer token, JSON, and errors as ApiError.
// Admin pages add their calls in their own module (e.g. api/admin.ts) on top of `request`.

import { getToken } from "../lib/auth";

export const API = "/api/v1";

/** A non-2xx answer: `status`, the API's `code` and its human `message` (docs/api.md errors). */
export class ApiError extends Error {
  constructor(readonly status: number, readonly code: string, message: string, readonly detail?: unknown) {
    super(message);
    this.name = "ApiError";
  }
}

type Listener = () => void;
const unauthorized = new Set<Listener>();
/** Called when any request answers 401: the shell signs the user out. */
export function onUnauthorized(fn: Listener): () => void {
  unauthorized.add(fn);
  return () => unauthorized.delete(fn);
}

export function authHeaders(token = getToken()): Record<string, string> {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

export interface RequestOptions {
  body?: unknown;
  form?: FormData;
  token?: string;
  signal?: AbortSignal;
  /** Do not sign out on 401 (the sign-in form checks a token this way). */
  quiet401?: boolean;
}

export async function request<T>(method: string, path: string, opts: RequestOptions = {}): Promise<T> {
  return (await send<T>(method, path, opts)).data;
}

/** One page of a paged list (docs/api.md "Paging"): the items and the cursor of the next page. */
export interface Page<T> { items: T[]; next: string | null }

export async function getPage<T>(path: string, opts: RequestOptions = {}): Promise<Page<T>> {
  const { data, headers } = await send<T[]>("GET", path, opts);
  return { items: data ?? [], next: headers.get("X-Next-Cursor") };
}

/** Every item of a paged list, following the cursors. */
export async function getAll<T>(path: string, opts: RequestOptions = {}): Promise<T[]> {
  const out: T[] = [];
  let before: string | null = null;
  do {
    const sep = path.includes("?") ? "&" : "?";
    const page: Page<T> = await getPage<T>(before ? `${path}${sep}before=${encodeURIComponent(before)}` : path, opts);
    out.push(...page.items);
    before = page.next;
  } while (before);
  return out;
}

async function send<T>(method: string, path: string, opts: RequestOptions): Promise<{ data: T; headers: Headers }> {
  const headers: Record<string, string> = authHeaders(opts.token);
  let body: BodyInit | undefined;
  if (opts.form) body = opts.form;
  else if (opts.body !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(opts.body);
  }
  let r: Response;
  try {
    r = await fetch(API + path, { method, headers, body, signal: opts.signal });
  } catch (e) {
    if ((e as Error).name === "AbortError") throw e;
    throw new ApiError(0, "network", "chatd cannot be reached. Check that the server is running.");
  }
  if (r.status === 204) return { data: undefined as T, headers: r.headers };
  const text = await r.text();
  let data: unknown = undefined;
  try {
    data = text ? JSON.parse(text) : undefined;
  } catch {
    data = undefined;
  }
  if (!r.ok) {
    if (r.status === 401 && !opts.quiet401) unauthorized.forEach((fn) => fn());
    const d = (data ?? {}) as { code?: string; message?: string; detail?: unknown };
    const message = typeof d.message === "string" ? d.message : typeof d.detail === "string" ? d.detail : `${r.status} ${r.statusText}`;
    throw new ApiError(r.status, d.code ?? String(r.status), message, d.detail);
  }
  return { data: data as T, headers: r.headers };
}

export const get = <T>(path: string, opts?: RequestOptions) => request<T>("GET", path, opts);
export const post = <T>(path: string, body?: unknown, opts?: RequestOptions) => request<T>("POST", path, { ...opts, body });
export const patch = <T>(path: string, body?: unknown, opts?: RequestOptions) => request<T>("PATCH", path, { ...opts, body });
export const put = <T>(path: string, body?: unknown, opts?: RequestOptions) => request<T>("PUT", path, { ...opts, body });
export const del = <T = void>(path: string, body?: unknown, opts?: RequestOptions) => request<T>("DELETE", path, { ...opts, body });

/** A readable sentence for any error a call can throw. */
export function describe(e: unknown): string {
  if (e instanceof ApiError) return e.message;
  if (e instanceof Error) return e.message;
  return String(e);
}
