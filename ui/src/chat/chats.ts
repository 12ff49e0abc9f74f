// The caller's chats as the UI knows them: filled by list calls, kept current by /chats/watch.
// The chat list and the open chat read from here, so a title or status change shows everywhere.

import { useEffect, useState } from "preact/hooks";
import { API, authHeaders } from "../api/client";
import type { Chat, WatchEvent } from "../api/types";
import { followSse } from "../lib/sse";

type Listener = () => void;

class ChatCache {
  private chats = new Map<string, Chat>();
  private listeners = new Set<Listener>();
  private stop: AbortController | null = null;
  /** Bumped when the watch reconnects (events may have been missed): lists reload. */
  epoch = 0;

  get(id: string): Chat | undefined {
    return this.chats.get(id);
  }

  all(): Chat[] {
    return [...this.chats.values()];
  }

  put(...chats: Chat[]): void {
    for (const c of chats) {
      const old = this.chats.get(c.id);
      // Never let an older copy (a slow list call) replace a newer one.
      if (old && old.updated_at > c.updated_at) continue;
      this.chats.set(c.id, { ...old, ...c });
    }
    this.emit();
  }

  subscribe(fn: Listener): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  private emit(): void {
    this.listeners.forEach((fn) => fn());
  }

  watch(): void {
    if (this.stop) return;
    const ctl = new AbortController();
    this.stop = ctl;
    void followSse(`${API}/chats/watch`, {
      onMessage: (msg) => {
        try {
          const ev = JSON.parse(msg.data) as WatchEvent;
          if (ev.chat?.id) this.put(ev.chat);
        } catch {
          // A keep-alive comment or a frame from a newer server: nothing to show.
        }
      },
      onOpen: (reconnect) => {
        if (reconnect) {
          this.epoch++;
          this.emit();
        }
      },
    }, { headers: authHeaders(), signal: ctl.signal });
  }

  unwatch(): void {
    this.stop?.abort();
    this.stop = null;
    this.chats.clear();
  }
}

export const chatCache = new ChatCache();

/** Re-renders the caller when any cached chat changes. */
export function useChatCache(): ChatCache {
  const [, setTick] = useState(0);
  useEffect(() => chatCache.subscribe(() => setTick((t) => t + 1)), []);
  return chatCache;
}
