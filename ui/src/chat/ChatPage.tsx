// One chat: its live stream, the history as turns, the queue, the composer and per-chat choices.

import { useEffect, useRef, useState } from "preact/hooks";
import { API, authHeaders, describe } from "../api/client";
import * as api from "../api/chats";
import type { ActionAnswer, BusyBehavior, InputPart, Message, PendingAction, StreamEvent } from "../api/types";
import { followSse } from "../lib/sse";
import type { RouteProps } from "../shell/router";
import { PendingActions } from "./Actions";
import { chatCache, useChatCache } from "./chats";
import { Composer } from "./Composer";
import { chatDraftKey } from "./drafts";
import { defaultModel, useConfig } from "./config";
import { Messages, textOf } from "./Messages";
import { ModelPicker, ServerPicker } from "./Pickers";
import { emptyChat, formatCost, reconnected, reduce, splitToolName, totals, withHistory, withOutcomes, type ChatState } from "./state";
import { StatusBadge } from "./StatusBadge";
import { ChatIdContext } from "./McpApp";

export function ChatPage({ params }: RouteProps) {
  const id = params.id;
  const cache = useChatCache();
  const chat = cache.get(id);
  const config = useConfig();
  const [s, setS] = useState<ChatState>(emptyChat);
  const [loadError, setLoadError] = useState<string | null>(null);
  const [connection, setConnection] = useState<"connecting" | "live" | "lost">("connecting");
  const [editing, setEditing] = useState<number | null>(null);
  const [confirmEdit, setConfirmEdit] = useState<{ id: number; text: string } | null>(null);
  const [editText, setEditText] = useState("");
  const [actionError, setActionError] = useState<string | null>(null);
  const [modelId, setModelId] = useState<string | null>(null);
  const [serverIds, setServerIds] = useState<string[] | null>(null);
  // Run times measured here, per call id, oldest first (ids can repeat across steps: `callCards`
  // gives each to its call's card); a call's start, while it runs; the newest message id when each
  // id's last run time was taken (a call part sent again before a new step is no new call).
  const durations = useRef(new Map<string, number[]>());
  const started = useRef(new Map<string, number>());
  const measuredAt = useRef(new Map<string, number>());
  const newestMessage = useRef(0);
  const bottom = useRef<HTMLDivElement>(null);
  const follow = useRef(true);
  const chatEl = useRef<HTMLDivElement>(null);
  // The newest waiting card is out of view and the person scrolled up: offer a jump to it.
  const [jump, setJump] = useState(false);

  // The chat row (title, status, last_error); the watch keeps it current afterwards.
  useEffect(() => {
    setS(emptyChat);
    setEditing(null);
    setModelId(null);
    setServerIds(null);
    setLoadError(null);
    durations.current = new Map();
    started.current = new Map();
    measuredAt.current = new Map();
    newestMessage.current = 0;
    api.getChat(id).then((c) => chatCache.put(c)).catch((e) => setLoadError(describe(e)));
  }, [id]);

  // The stream: snapshot (status, parts in flight, every message, the queue), then live events.
  useEffect(() => {
    const ctl = new AbortController();
    setConnection("connecting");
    void followSse(`${API}/chats/${id}/stream`, {
      onOpen: (again) => {
        setConnection("live");
        if (again) setS(reconnected);
        // How earlier calls were answered (denied, edited, not answered in time): the history
        // holds only their results.
        api.listActions(id).then((list) => { if (!ctl.signal.aborted) setS((prev) => withOutcomes(prev, list)); }).catch(() => undefined);
      },
      onDisconnect: () => setConnection("lost"),
      onFatal: (status) => setLoadError(status === 404 ? "This chat does not exist, or it is not yours." : `The chat's stream was refused (${status}).`),
      onMessage: (msg) => {
        let ev: StreamEvent;
        try {
          ev = JSON.parse(msg.data) as StreamEvent;
        } catch {
          return;
        }
        if (ev.type === "message") newestMessage.current = Math.max(newestMessage.current, ev.message.id);
        if (ev.type === "message_part") {
          const p = ev.part;
          const id = p.type === "tool-call" || p.type === "tool-result" ? p.tool_call_id : "";
          if (p.type === "tool-call" && p.args_delta == null && !started.current.has(id) && measuredAt.current.get(id) !== newestMessage.current) {
            started.current.set(id, performance.now());
          }
          if (p.type === "tool-result" && started.current.has(id)) {
            durations.current.set(id, [...(durations.current.get(id) ?? []), Math.round(performance.now() - started.current.get(id)!)]);
            started.current.delete(id);
            measuredAt.current.set(id, newestMessage.current);
          }
        }
        if (ev.type === "status") {
          const c = chatCache.get(id);
          if (c && c.status !== ev.status) chatCache.put({ ...c, status: ev.status });
        }
        setS((prev) => reduce(prev, ev));
      },
    }, { headers: authHeaders(), signal: ctl.signal });
    return () => ctl.abort();
  }, [id]);

  // An edit (here or elsewhere) re-sent older messages: take the history from the API.
  useEffect(() => {
    if (!s.needsReload) return;
    api.listMessages(id).then((page) => setS((prev) => withHistory(prev, page.messages, page.queued_messages))).catch(() => undefined);
  }, [s.needsReload, id]);

  // Keep the newest message in view while it streams, unless the user scrolled up. The composer
  // sticks to the bottom over the end of the chat: scroll to the very end (what ends the chat then
  // sits just above the composer), never an element's own end (that lands behind the composer).
  useEffect(() => {
    if (!follow.current) return;
    const main = document.getElementById("main");
    if (main) main.scrollTop = main.scrollHeight;
    else bottom.current?.scrollIntoView({ block: "end" });
  }, [s.messages.length, s.live, s.queue.length]);

  /** The newest waiting card, when it is not wholly in view between the header and the composer. */
  const hiddenCard = (): { card: HTMLElement; by: number } | null => {
    const root = chatEl.current;
    const card = root?.querySelector<HTMLElement>(".actions > .action:last-child");
    const composer = root?.querySelector<HTMLElement>(".composer");
    const header = root?.querySelector<HTMLElement>(".chat-header");
    if (!card || !composer) return null;
    const r = card.getBoundingClientRect();
    const top = (header?.getBoundingClientRect().bottom ?? 0) + 8;
    const bottomEdge = composer.getBoundingClientRect().top - 8;
    // Its end above the composer, but never its start under the header (a card taller than the gap).
    if (r.bottom > bottomEdge) return { card, by: Math.min(r.bottom - bottomEdge, r.top - top) };
    if (r.top < top) return { card, by: r.top - top };
    return null;
  };
  const revealCard = () => {
    const hidden = hiddenCard();
    const main = document.getElementById("main");
    if (hidden && main) main.scrollTop += hidden.by;
    setJump(false);
  };
  // An action arrives, or the composer grows for it (its note, its choices): the newest card is
  // scrolled into view above the composer, unless the person scrolled up to read (then a button
  // offers the jump instead of pulling the page from under them).
  const newestAction = s.actions.length ? s.actions[s.actions.length - 1].id : null;
  useEffect(() => {
    if (!newestAction) {
      setJump(false);
      return;
    }
    const check = () => {
      if (!hiddenCard()) setJump(false);
      else if (follow.current) revealCard();
      else setJump(true);
    };
    check();
    // The composer grows for the wait, and what comes before the card can still change (the call's
    // card, a notice): each time, the card is checked again.
    const seen = new ResizeObserver(() => check());
    const composer = chatEl.current?.querySelector(".composer");
    if (composer) seen.observe(composer);
    if (chatEl.current) seen.observe(chatEl.current);
    return () => seen.disconnect();
  }, [newestAction]);
  useEffect(() => {
    const main = document.getElementById("main");
    if (!main) return;
    // Following stops when the person scrolls up, and resumes at the bottom. Not "far from the
    // bottom" alone: a scroll event comes a frame late, when a card may have grown the chat already.
    let last = main.scrollTop;
    const on = () => {
      const top = main.scrollTop;
      const atBottom = main.scrollHeight - top - main.clientHeight < 80;
      follow.current = atBottom || (follow.current && top >= last - 2);
      last = top;
      if (!hiddenCard()) setJump(false);
    };
    main.addEventListener("scroll", on, { passive: true });
    return () => main.removeEventListener("scroll", on);
  }, []);

  const status = s.status ?? chat?.status ?? null;
  // This stream is the live truth of the open chat's questions: give them to the list (its badge
  // says so), again whenever the cached copy changes: a watch event read before a running call's
  // form was asked (a title generated beside the turn) replaces the copy without it.
  const actionIds = s.actions.map((a) => a.id).join(" ");
  const cachedActionIds = (chat?.pending_actions ?? []).map((a) => a.id).join(" ");
  useEffect(() => {
    const c = chatCache.get(id);
    if (!c || s.status === null) return;
    if (cachedActionIds !== actionIds) chatCache.put({ ...c, pending_actions: s.actions });
  }, [actionIds, cachedActionIds, s.status, id]);
  // A chat waiting for an answer takes messages as a busy one does (queued by default).
  const busy = status === "running" || status === "pending" || status === "requires_action";
  const lastError = chat?.last_error ?? s.error;
  const chosenModel = modelId ?? chat?.last_model_config_id ?? defaultModel(config.models);
  const chosenServers = serverIds ?? chat?.mcp_server_ids ?? [];

  const act = async (fn: () => Promise<unknown>) => {
    setActionError(null);
    try {
      await fn();
    } catch (e) {
      setActionError(describe(e));
    }
  };

  const reloadHistory = async () => {
    const page = await api.listMessages(id);
    setS((prev) => withHistory(prev, page.messages, page.queued_messages));
  };

  const send = async (content: InputPart[], behavior: BusyBehavior) => {
    const out = await api.sendMessage(id, {
      content,
      busy_behavior: behavior,
      model_config_id: modelId ?? undefined,
      mcp_server_ids: serverIds ?? undefined,
    });
    chatCache.put(out.chat);
  };

  const answerAction = async (action: PendingAction, answer: ActionAnswer) => {
    const c = await api.answerAction(id, action.id, answer);
    chatCache.put(c);
    // The stream confirms with `action_resolved`; drop the card now so it cannot be sent twice.
    setS((prev) => reduce(prev, { type: "action_resolved", chat_id: id, action_id: action.id, decision: answer.decision, mine: true, edited_args: answer.args ?? null }));
  };

  const saveEdit = async (messageId: number, text: string) => {
    const later = s.messages.some((m) => m.id > messageId);
    if (later && !confirmEdit) {
      setConfirmEdit({ id: messageId, text });
      return;
    }
    await act(async () => {
      const out = await api.editMessage(id, messageId, text);
      chatCache.put(out.chat);
      setEditing(null);
      setConfirmEdit(null);
      await reloadHistory();
    });
  };

  const retry = () => act(async () => {
    const newestUser = (messages: Message[]) => [...messages].reverse().find((m) => m.role === "user");
    // The page may not hold the message yet (the status can arrive before it): ask the API.
    const lastUser = newestUser(s.messages) ?? newestUser((await api.listMessages(id)).messages);
    if (!lastUser) throw new Error("There is no message to retry.");
    const out = await api.editMessage(id, lastUser.id, lastUser.content.filter((p) => p.type === "text" || p.type === "file") as InputPart[]);
    chatCache.put(out.chat);
    await reloadHistory();
  });

  const editor = (m: Message) => (
    <form
      class="editor"
      aria-label="Edit"
      onSubmit={(e) => {
        e.preventDefault();
        void saveEdit(m.id, editText);
      }}
    >
      <label for={`edit-${m.id}`} class="visually-hidden">Edited text</label>
      <textarea id={`edit-${m.id}`} rows={3} value={editText} onInput={(e) => setEditText((e.target as HTMLTextAreaElement).value)} autoFocus />
      {confirmEdit?.id === m.id ? (
        <div role="alertdialog" aria-labelledby={`confirm-${m.id}`} class="confirm">
          <p id={`confirm-${m.id}`}>Everything after this message will be replaced by a new answer.</p>
          <button type="submit" class="danger">Replace</button>
          <button type="button" onClick={() => setConfirmEdit(null)}>Keep it</button>
        </div>
      ) : (
        <div class="editor-actions">
          <button type="submit" class="primary" disabled={!editText.trim()}>Save and resend</button>
          <button type="button" onClick={() => { setEditing(null); setConfirmEdit(null); }}>Cancel</button>
        </div>
      )}
    </form>
  );

  if (loadError) {
    return <section class="page"><h1>Chat unavailable</h1><p role="alert">{loadError}</p><p><a href="#/">Start a new chat</a></p></section>;
  }

  const chatTotals = totals(s.messages);
  // Steered messages wait in the queue table too, but join the running turn instead of following it.
  const steering = s.queue.filter((q) => q.steer);
  const queued = s.queue.filter((q) => !q.steer);
  return (
    <div class="chat" ref={chatEl}>
      <header class="chat-header">
        <div class="chat-heading">
          {chat?.parent_chat_id && <a class="parent" href={`#/chats/${chat.parent_chat_id}`}>← Parent chat</a>}
          {/* Until the chat is read its title is unknown: not "New chat", which a reload flashed. */}
          <h1 aria-busy={!chat}>{chat ? chat.title || "New chat" : "Loading…"}</h1>
          <span aria-live="polite" class="chat-status">
            {status && <StatusBadge status={status} kinds={s.actions.map((a) => a.kind)} />}
            {connection === "lost" && <span class="badge">reconnecting…</span>}
          </span>
        </div>
        <div class="chat-tools">
          <ModelPicker models={config.models} value={chosenModel} onChange={setModelId} />
          <ServerPicker servers={config.servers} value={chosenServers} onChange={setServerIds} />
          {chat && (
            <button type="button" onClick={() => act(async () => { await api.archive(id, !chat.archived); chatCache.put({ ...chat, archived: !chat.archived }); })}>
              {chat.archived ? "Unarchive" : "Archive"}
            </button>
          )}
          {(chatTotals.tokens > 0 || chatTotals.priced) && (
            <span class="muted" aria-label="Tokens and cost of this chat">
              Chat: {chatTotals.tokens.toLocaleString()} tokens{chatTotals.priced ? ` · ${formatCost(chatTotals.costMicros)}` : ""}
            </span>
          )}
        </div>
      </header>
      {chat?.archived && <p class="notice notice-info">This chat is archived. Unarchive it to continue.</p>}
      {chat && (chat.allowed_tools?.length ?? 0) > 0 && (
        <details class="allowed-tools">
          <summary>Always allowed in this chat ({chat.allowed_tools!.length})</summary>
          <p class="muted">These tools run without asking for your approval. Revoke one to be asked again the next time the agent calls it.</p>
          <ul aria-label="Always allowed tools">
            {chat.allowed_tools!.map((name) => {
              const { server, tool } = splitToolName(name);
              return (
                <li key={name}>
                  <code>{tool}</code>{server && <span class="muted"> on {server}</span>}
                  <button type="button" class="small" aria-label={`Revoke always allow for ${tool}`}
                    onClick={() => act(async () => chatCache.put(await api.revokeAllowedTool(id, name)))}>Revoke</button>
                </li>
              );
            })}
          </ul>
        </details>
      )}
      <ChatIdContext.Provider value={id}>
      <Messages
        messages={s.messages}
        live={s.live}
        running={status === "running"}
        waiting={s.actions}
        outcomes={s.outcomes}
        durations={durations.current}
        onEdit={(m) => { setEditing(m.id); setEditText(textOf(m.content)); setConfirmEdit(null); }}
        editing={editing}
        renderEditor={editor}
        canEdit={!chat?.archived}
      />
      </ChatIdContext.Provider>
      {s.notices.map((n, i) => <p key={i} class={`notice notice-${n.level}`} role="note">{n.text}</p>)}
      {s.retry && status === "running" && (
        <p class="notice notice-warning" role="status">
          The model provider failed ({s.retry.error}). Retrying (attempt {s.retry.attempt}) at {new Date(s.retry.retryingAt).toLocaleTimeString()}.
        </p>
      )}
      {status === "error" && (
        <div class="failed" role="alert">
          <p><strong>This answer failed.</strong> {lastError || "The server gave no reason."}</p>
          <button type="button" onClick={retry}>Retry</button>
        </div>
      )}
      {status === "pending" && s.live.length === 0 && <p class="muted" role="status">Waiting for a worker…</p>}
      {s.actions.length > 0 && <PendingActions actions={s.actions} onAnswer={answerAction} />}
      {steering.length > 0 && (
        <section class="queue steering" aria-labelledby="steer-h">
          <h2 id="steer-h">Steering ({steering.length})</h2>
          <p class="muted">{status === "running" ? "Joins the running answer at its next step." : "Runs next: the answer ended before it could join."}</p>
          <ol>
            {steering.map((q) => (
              <li key={q.id}>
                <span class="queued-text">{textOf(q.content) || "(attachment)"}</span>
                <button type="button" class="small" onClick={() => act(() => api.deleteQueued(id, q.id))}>Delete</button>
              </li>
            ))}
          </ol>
        </section>
      )}
      {queued.length > 0 && (
        <section class="queue" aria-labelledby="queue-h">
          <h2 id="queue-h">Queued ({queued.length})</h2>
          <p class="muted">
            {status === "requires_action" ? "Sent one by one once the question above is answered (or cancelled)."
              : busy ? "Sent one by one after this answer, also when you stop it."
              : "Sent one by one, starting now."}
          </p>
          <ol>
            {queued.map((q, i) => (
              <li key={q.id}>
                <span class="queued-text">{textOf(q.content) || "(attachment)"}</span>
                {i === 0 && busy && s.queue[0]?.id === q.id && <span class="badge">next</span>}
                <button type="button" class="small" onClick={() => act(() => api.promoteQueued(id, q.id))}>Send now</button>
                <button type="button" class="small" onClick={() => act(() => api.deleteQueued(id, q.id))}>Delete</button>
              </li>
            ))}
          </ol>
          {queued.length > 1 && (
            <button type="button" class="small" onClick={() => act(async () => { for (const q of queued) await api.deleteQueued(id, q.id); })}>Delete all queued</button>
          )}
        </section>
      )}
      {actionError && <p class="error" role="alert">{actionError}</p>}
      <div ref={bottom} />
      <Composer
        busy={busy}
        awaitingAnswer={status === "requires_action"}
        pending={status === "requires_action" ? s.actions : []}
        queued={s.queue.length}
        draftKey={chatDraftKey(id)}
        disabled={!!chat?.archived}
        disabledReason="This chat is archived."
        onSend={send}
        onStop={() => act(async () => chatCache.put(await api.interrupt(id)))}
        onJump={jump ? revealCard : undefined}
      />
    </div>
  );
}
