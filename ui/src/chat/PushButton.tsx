// "Notify me": a web push subscription (POST /push/subscriptions) so a finished turn reaches
// the user when the tab is in the background. Hidden where the browser has no push.

import { useEffect, useState } from "preact/hooks";
import { describe } from "../api/client";
import { pushSubscribe, pushUnsubscribe, vapidKey } from "../api/chats";

function keyBytes(b64url: string): Uint8Array {
  const b64 = b64url.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (b64url.length % 4)) % 4);
  return Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
}

async function registration(): Promise<ServiceWorkerRegistration> {
  return navigator.serviceWorker.register("/static/sw.js", { scope: "/static/" });
}

export function PushButton() {
  const supported = typeof navigator !== "undefined" && "serviceWorker" in navigator && typeof window !== "undefined" && "PushManager" in window;
  const [on, setOn] = useState<boolean | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    if (!supported) return;
    registration().then((r) => r.pushManager.getSubscription()).then((s) => setOn(!!s)).catch(() => setOn(null));
  }, []);
  if (!supported || on === null) return null;
  const toggle = async () => {
    setError(null);
    try {
      const reg = await registration();
      if (on) {
        const sub = await reg.pushManager.getSubscription();
        if (sub) {
          await pushUnsubscribe(sub.endpoint);
          await sub.unsubscribe();
        }
        setOn(false);
        return;
      }
      if ((await Notification.requestPermission()) !== "granted") throw new Error("Notifications are blocked for this site.");
      const { public_key } = await vapidKey();
      const sub = await reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: keyBytes(public_key) as BufferSource });
      await pushSubscribe(sub.toJSON());
      setOn(true);
    } catch (e) {
      setError(describe(e));
    }
  };
  return (
    <>
      <button type="button" aria-pressed={on} onClick={toggle} title="Get a notification when an answer is ready">
        {on ? "Notifications on" : "Notify me"}
      </button>
      {error && <span class="error" role="alert">{error}</span>}
    </>
  );
}
