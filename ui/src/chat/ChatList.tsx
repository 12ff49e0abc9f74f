// The sidebar's chat list: active or archived, searchable by title (on the server, so chats not
// loaded yet are found too), paged when the API pages, and live through the chat cache (/chats/watch).

import { useEffect, useState } from "preact/hooks";
import { describe } from "../api/client";
import { listChats } from "../api/chats";
import { ChatBadges } from "./StatusBadge";
import { chatCache, useChatCache } from "./chats";

const PAGE = 50;
// Typing pauses this long before the server is asked.
const SEARCH_DELAY_MS = 250;

export function ChatList({ activeId }: { activeId: string | null }) {
  const cache = useChatCache();
  const [archived, setArchived] = useState(false);
  const [query, setQuery] = useState("");
  const [cursor, setCursor] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [loading, setLoading] = useState(false);

  const q = query.trim().toLowerCase();

  const load = async (before: string | null) => {
    setLoading(true);
    try {
      const page = await listChats({ archived, limit: PAGE, before, q: q || undefined });
      chatCache.put(...page.chats);
      setCursor(page.next_cursor);
      setError(null);
    } catch (e) {
      setError(describe(e));
    } finally {
      setLoading(false);
    }
  };

  useEffect(() => {
    chatCache.watch();
  }, []);
  useEffect(() => {
    if (!q) {
      void load(null);
      return;
    }
    const timer = setTimeout(() => void load(null), SEARCH_DELAY_MS);
    return () => clearTimeout(timer);
  }, [archived, cache.epoch, q]);

  const chats = cache
    .all()
    .filter((c) => c.archived === archived && !c.parent_chat_id)
    .filter((c) => !q || (c.title || "New chat").toLowerCase().includes(q))
    .sort((a, b) => (a.updated_at < b.updated_at ? 1 : a.updated_at > b.updated_at ? -1 : 0));

  return (
    <section class="chat-list" aria-labelledby="chats-h">
      <h2 id="chats-h" class="visually-hidden">Chats</h2>
      <div class="tabs" role="group" aria-label="Which chats">
        <button type="button" aria-pressed={!archived} onClick={() => setArchived(false)}>Active</button>
        <button type="button" aria-pressed={archived} onClick={() => setArchived(true)}>Archived</button>
      </div>
      <label class="visually-hidden" for="chat-search">Search chats by title</label>
      <input id="chat-search" type="search" placeholder="Search chats" value={query} onInput={(e) => setQuery((e.target as HTMLInputElement).value)} />
      {error && <p class="error" role="alert">{error}</p>}
      <ul aria-label={archived ? "Archived chats" : "Chats"}>
        {chats.map((c) => (
          <li key={c.id}>
            <a href={`#/chats/${c.id}`} aria-current={c.id === activeId ? "page" : undefined}>
              <span class="chat-title">{c.title || "New chat"}</span>
              <ChatBadges chat={c} />
            </a>
          </li>
        ))}
      </ul>
      {!loading && chats.length === 0 && <p class="muted">{q ? "No chat matches." : archived ? "No archived chats." : "No chats yet."}</p>}
      {cursor && (
        <button type="button" onClick={() => load(cursor)} disabled={loading}>
          {loading ? "Loading…" : "Load more chats"}
        </button>
      )}
    </section>
  );
}
