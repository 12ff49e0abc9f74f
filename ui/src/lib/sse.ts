// Server-Sent Events over fetch: EventSource cannot send the Authorization header. Frames are
// parsed by eventsource-parser (CRLF, CR and LF line ends; events split across chunks), and a
// dropped connection is resumed with `Last-Event-ID` (chatd's id is the highest message id
// delivered, so the server re-sends only what came after it).

import { createParser, type EventSourceMessage } from "eventsource-parser";

export interface SseHandlers {
  /** Each event, with its `event:` name and raw `data`. */
  onMessage: (msg: EventSourceMessage) => void;
  /** Every (re)connection that answered 200: the server now re-sends its snapshot. */
  onOpen?: (reconnect: boolean) => void;
  /** A connection was lost; `retryInMs` until the next attempt. */
  onDisconnect?: (retryInMs: number) => void;
  /** The stream cannot continue (401, 404, ...): no more attempts. */
  onFatal?: (status: number, message: string) => void;
}

export interface SseOptions {
  headers?: Record<string, string>;
  lastEventId?: string;
  signal: AbortSignal;
  fetchFn?: typeof fetch;
  /** Waits between attempts: 0.5 s doubling to 10 s, reset by a successful connection. */
  sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
  minDelayMs?: number;
  maxDelayMs?: number;
}

function defaultSleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => { clearTimeout(t); resolve(); }, { once: true });
  });
}

/** Follows `url` until `signal` aborts or a fatal answer. Resolves when it stops. */
export async function followSse(url: string, h: SseHandlers, opts: SseOptions): Promise<void> {
  const fetchFn = opts.fetchFn ?? fetch;
  const sleep = opts.sleep ?? defaultSleep;
  const min = opts.minDelayMs ?? 500;
  const max = opts.maxDelayMs ?? 10_000;
  let lastId = opts.lastEventId;
  let delay = min;
  let connected = false;
  const parser = createParser({
    onEvent(msg) {
      if (msg.id !== undefined) lastId = msg.id;
      h.onMessage(msg);
    },
  });
  while (!opts.signal.aborted) {
    const headers: Record<string, string> = { Accept: "text/event-stream", ...opts.headers };
    if (lastId) headers["Last-Event-ID"] = lastId;
    try {
      const r = await fetchFn(url, { headers, signal: opts.signal, cache: "no-store" });
      if (r.status === 401 || r.status === 403 || r.status === 404) {
        h.onFatal?.(r.status, await r.text().catch(() => ""));
        return;
      }
      if (r.ok && r.body) {
        h.onOpen?.(connected);
        connected = true;
        delay = min;
        parser.reset();
        const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          parser.feed(value);
        }
      }
    } catch (e) {
      if (opts.signal.aborted) return;
      void e; // a network error: reconnect below
    }
    if (opts.signal.aborted) return;
    h.onDisconnect?.(delay);
    await sleep(delay, opts.signal);
    delay = Math.min(max, delay * 2);
  }
}
