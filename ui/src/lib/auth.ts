// The API token lives in localStorage. `chatd serve` prints `http://host/#token=...`: the token is
// taken from the fragment (never sent to the server in a URL) and the fragment is cleared.

const KEY = "chatd-token";

export function getToken(): string | null {
  try {
    return localStorage.getItem(KEY);
  } catch {
    return null;
  }
}

export function setToken(token: string | null): void {
  if (token) localStorage.setItem(KEY, token);
  else localStorage.removeItem(KEY);
}

/** The token in `#token=...` (also `#/x?token=`-free), or null. Removes it from the address bar. */
export function takeTokenFromLocation(loc: Location = location, hist: History = history): string | null {
  const hash = loc.hash.replace(/^#/, "");
  if (!hash.startsWith("token=")) return null;
  const token = new URLSearchParams(hash).get("token");
  hist.replaceState(null, "", loc.pathname + loc.search + "#/");
  return token && token.trim() ? token.trim() : null;
}
