// A small hash router: routes are `#/path/:param`. Hash routing keeps the server a plain static
// mount (any URL but `/` is the API's), and `#token=` sign-in links stay compatible.

import type { ComponentType } from "preact";
import { useEffect, useState } from "preact/hooks";

export interface RouteProps { params: Record<string, string> }

export interface RouteDef {
  /** `/chats/:id`; matched against the hash without its `#`. */
  path: string;
  component: ComponentType<RouteProps>;
  /** Shown in the navigation when set. `section: "admin"` entries are listed for admins only. */
  nav?: { label: string; section: "main" | "admin"; order?: number };
  /** Members who open it see "Only admins can open this page." */
  adminOnly?: boolean;
}

export function currentPath(): string {
  const h = location.hash.replace(/^#/, "");
  return h.startsWith("/") ? h : "/";
}

export function navigate(path: string): void {
  if (currentPath() !== path) location.hash = "#" + path;
}

export function usePath(): string {
  const [path, setPath] = useState(currentPath());
  useEffect(() => {
    const on = () => setPath(currentPath());
    addEventListener("hashchange", on);
    return () => removeEventListener("hashchange", on);
  }, []);
  return path;
}

export function match(routes: RouteDef[], path: string): { route: RouteDef; params: Record<string, string> } | null {
  const parts = path.split("?")[0].split("/").filter(Boolean);
  for (const route of routes) {
    const want = route.path.split("/").filter(Boolean);
    if (want.length !== parts.length) continue;
    const params: Record<string, string> = {};
    let ok = true;
    want.forEach((seg, i) => {
      if (seg.startsWith(":")) params[seg.slice(1)] = decodeURIComponent(parts[i]);
      else if (seg !== parts[i]) ok = false;
    });
    if (ok) return { route, params };
  }
  return null;
}
