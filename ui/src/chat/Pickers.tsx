// Per-chat choices: the model, and the MCP servers (forced ones locked on) with a "Connect"
// button for servers that need the user's own OAuth sign-in.

import { useEffect, useState } from "preact/hooks";
import { describe } from "../api/client";
import { getMcpToken, startMcpOAuth } from "../api/chats";
import type { McpServer, ModelConfig } from "../api/types";

/** A model's option in the picker. Which provider it runs on matters once there are several
 * (Ollama and vLLM both serving "llama3"): the option then names it, as people know it (its
 * display name; the name is the admin's handle). */
export function modelLabel(m: ModelConfig, severalProviders: boolean): string {
  const provider = m.provider_display_name || m.provider_name;
  return `${m.display_name || m.model}${severalProviders && provider ? ` · ${provider}` : ""}${m.is_default ? " (default)" : ""}`;
}

export function ModelPicker({ models, value, onChange, id = "model" }: { models: ModelConfig[]; value: string | null; onChange: (id: string) => void; id?: string }) {
  if (models.length === 0) return null;
  const several = new Set(models.map((m) => m.provider_id)).size > 1;
  return (
    <span class="picker">
      <label for={id}>Model</label>
      <select id={id} value={value ?? ""} onChange={(e) => onChange((e.target as HTMLSelectElement).value)}>
        {models.map((m) => (
          <option key={m.id} value={m.id}>{modelLabel(m, several)}</option>
        ))}
      </select>
    </span>
  );
}

function ConnectButton({ server }: { server: McpServer }) {
  const [connected, setConnected] = useState<boolean | null>(null);
  const [error, setError] = useState<string | null>(null);
  const refresh = () => getMcpToken(server.id).then((t) => setConnected(t.connected)).catch(() => setConnected(null));
  useEffect(() => {
    void refresh();
    const on = (e: MessageEvent) => {
      if (e.origin !== location.origin) return;
      const d = e.data as { type?: string; serverId?: string };
      if (d?.type === "mcp-oauth2-complete" && d.serverId === server.id) void refresh();
    };
    addEventListener("message", on);
    return () => removeEventListener("message", on);
  }, [server.id]);
  if (connected === true) return <span class="muted">connected</span>;
  return (
    <>
      <button
        type="button"
        class="small"
        onClick={async () => {
          setError(null);
          // Open the tab in the click itself, or the browser blocks it as a pop-up.
          const tab = window.open("about:blank", "_blank");
          try {
            const { authorize_url } = await startMcpOAuth(server.id);
            if (tab) tab.location.href = authorize_url;
            else location.href = authorize_url;
          } catch (e) {
            tab?.close();
            setError(describe(e));
          }
        }}
      >
        Connect {server.display_name}
      </button>
      {error && <span class="error" role="alert">{error}</span>}
    </>
  );
}

export function ServerPicker({ servers, value, onChange }: { servers: McpServer[]; value: string[]; onChange: (ids: string[]) => void }) {
  if (servers.length === 0) return null;
  const on = new Set(value);
  return (
    <details class="servers">
      <summary>Tools: {servers.filter((s) => s.availability === "force_on" || on.has(s.id)).length} of {servers.length} servers</summary>
      <fieldset>
        <legend>MCP servers for this chat</legend>
        {servers.map((s) => {
          const forced = s.availability === "force_on";
          return (
            <div key={s.id} class="server">
              <label>
                <input
                  type="checkbox"
                  checked={forced || on.has(s.id)}
                  disabled={forced}
                  onChange={(e) => {
                    const next = new Set(on);
                    if ((e.target as HTMLInputElement).checked) next.add(s.id);
                    else next.delete(s.id);
                    onChange([...next]);
                  }}
                />
                {s.display_name}
                {forced && <span class="muted"> (always on)</span>}
                {(s.status?.state === "failing" || s.status?.state === "unauthorized") && (
                  <span class="error" title={s.status.last_error_at ? `since ${new Date(s.status.last_error_at).toLocaleString()}` : undefined}> (not reachable now)</span>
                )}
              </label>
              {s.description && <span class="muted description">{s.description}</span>}
              {s.auth_type === "oauth2" && <ConnectButton server={s} />}
            </div>
          );
        })}
      </fieldset>
    </details>
  );
}
