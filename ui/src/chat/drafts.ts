// A chat's message-box draft, offered from elsewhere on the page (an MCP App's ui/message): the
// chat's Composer listens under its draft key and puts the text in the box for the person to
// read and send. Nothing is sent in their name.

type Listener = (text: string) => void;

const listeners = new Map<string, Set<Listener>>();

/** Where a chat's draft is kept (session storage) and offered. */
export function chatDraftKey(chatId: string): string {
  return `chatd:draft:${chatId}`;
}

/** Offer text to the message box under `key`; false when no box is listening. */
export function offerDraft(key: string, text: string): boolean {
  const here = listeners.get(key);
  if (!here || here.size === 0) return false;
  for (const listener of here) listener(text);
  return true;
}

export function onDraftOffered(key: string, listener: Listener): () => void {
  const here = listeners.get(key) ?? new Set<Listener>();
  here.add(listener);
  listeners.set(key, here);
  return () => {
    here.delete(listener);
    if (here.size === 0) listeners.delete(key);
  };
}
