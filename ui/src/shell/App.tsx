// The shell: sign-in, the navigation (chat list and page links) and the routed page.

import { useEffect, useState } from "preact/hooks";
import { ApiError, describe, onUnauthorized } from "../api/client";
import { listModelConfigs, me } from "../api/chats";
import type { User } from "../api/types";
import { ChatList } from "../chat/ChatList";
import { PushButton } from "../chat/PushButton";
import { getToken, setToken, takeTokenFromLocation } from "../lib/auth";
import { routes } from "../routes";
import { match, navigate, usePath } from "./router";
import { SessionContext } from "./session";
import { SignIn } from "./SignIn";

type Auth = { state: "checking" } | { state: "out"; error: string | null } | { state: "in"; user: User };

async function check(token: string): Promise<User> {
  return me(token);
}

function reason(e: unknown): string {
  if (e instanceof ApiError && e.status === 401) return "That token is not valid. Check it and try again.";
  return describe(e);
}

export function App() {
  const [auth, setAuth] = useState<Auth>({ state: "checking" });
  const [busy, setBusy] = useState(false);
  const [navOpen, setNavOpen] = useState(false);
  const path = usePath();

  useEffect(() => {
    const signIn = (fromLink: string | null) => {
      const token = fromLink ?? getToken();
      if (!token) {
        setAuth({ state: "out", error: null });
        return;
      }
      check(token)
        .then((user) => {
          setToken(token);
          setAuth({ state: "in", user });
        })
        .catch((e) => {
          if (!fromLink && e instanceof ApiError && e.status === 401) setToken(null);
          setAuth({ state: "out", error: fromLink ? "The sign-in link's token is not valid. " + reason(e) : e instanceof ApiError && e.status === 401 ? "Your token is no longer valid: it was revoked, or an admin disabled your account. Sign in with a new token, or ask an admin." : reason(e) });
        });
    };
    signIn(takeTokenFromLocation());
    // A sign-in link opened in a tab that already shows chatd only changes the fragment (no page
    // load): take the token from it as well, and clear it from the address bar.
    const onHash = () => {
      const fromLink = takeTokenFromLocation();
      if (fromLink) signIn(fromLink);
    };
    addEventListener("hashchange", onHash);
    return () => removeEventListener("hashchange", onHash);
  }, []);

  useEffect(
    () => onUnauthorized(() => {
      setToken(null);
      setAuth({ state: "out", error: "Your token is no longer valid: it was revoked, or an admin disabled your account. Sign in with a new token, or ask an admin." });
    }),
    [],
  );

  // First run: an admin on a server without models lands on the setup page (when one is registered).
  useEffect(() => {
    if (auth.state !== "in" || auth.user.role !== "admin") return;
    if (!routes.some((r) => r.path === "/admin/setup")) return;
    listModelConfigs().then((m) => { if (m.length === 0) navigate("/admin/setup"); }).catch(() => undefined);
  }, [auth.state]);

  useEffect(() => setNavOpen(false), [path]);

  if (auth.state === "checking") return <main id="main" class="signin"><p role="status">Loading…</p></main>;
  if (auth.state === "out") {
    return (
      <SignIn
        error={auth.error}
        busy={busy}
        onSubmit={async (token) => {
          setBusy(true);
          try {
            const user = await check(token);
            setToken(token);
            setAuth({ state: "in", user });
            navigate("/");
          } catch (e) {
            setAuth({ state: "out", error: reason(e) });
          } finally {
            setBusy(false);
          }
        }}
      />
    );
  }

  const user = auth.user;
  const signOut = () => {
    setToken(null);
    setAuth({ state: "out", error: null });
    navigate("/");
  };
  const found = match(routes, path);
  const isAdmin = user.role === "admin";
  const adminNav = routes
    .filter((r) => r.nav?.section === "admin")
    .sort((a, b) => (a.nav!.order ?? 50) - (b.nav!.order ?? 50));
  let page;
  if (!found) page = <section class="page"><h1>Not found</h1><p>There is no page at {path}. <a href="#/">Start a new chat</a>.</p></section>;
  else if (found.route.adminOnly && !isAdmin) page = <section class="page"><h1>Admins only</h1><p>Only admins can open this page.</p></section>;
  else {
    const Page = found.route.component;
    page = <Page params={found.params} />;
  }

  return (
    <SessionContext.Provider value={{ user, signOut }}>
      <a class="skip" href="#main" onClick={(e) => { e.preventDefault(); document.getElementById("main")?.focus(); }}>Skip to content</a>
      <div class={"app" + (navOpen ? " nav-open" : "")}>
        <header class="topbar">
          <button type="button" class="menu-button" aria-expanded={navOpen} aria-controls="sidebar" onClick={() => setNavOpen(!navOpen)}>
            Menu
          </button>
          <a class="brand" href="#/">chatd</a>
          <div class="topbar-end">
            <PushButton />
            <span class="who" title={`Signed in as ${user.username} (${user.role})`}>{user.username}</span>
            <button type="button" onClick={signOut}>Sign out</button>
          </div>
        </header>
        <nav
          id="sidebar"
          class="sidebar"
          aria-label="Chats and pages"
          // On a phone the menu closes once a link in it is followed (even to the page already open).
          onClick={(e) => { if ((e.target as HTMLElement).closest("a")) setNavOpen(false); }}
        >
          <a class="button primary new-chat" href="#/">New chat</a>
          <ChatList activeId={found?.params.id ?? null} />
          {isAdmin && adminNav.length > 0 && (
            <section class="admin-nav" aria-labelledby="admin-nav-h">
              <h2 id="admin-nav-h">Admin</h2>
              <ul>
                {adminNav.map((r) => (
                  <li key={r.path}>
                    <a href={"#" + r.path} aria-current={path === r.path ? "page" : undefined}>{r.nav!.label}</a>
                  </li>
                ))}
              </ul>
            </section>
          )}
        </nav>
        <main id="main" class="main" tabIndex={-1}>{page}</main>
      </div>
    </SessionContext.Provider>
  );
}
