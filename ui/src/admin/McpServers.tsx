// MCP servers: create and edit (transport, URL or stdio command/args/env, auth, tool lists,
// availability, timeouts) and a Test that lists the discovered tools or shows the connection error.
// Secrets (API key, header values, env values, client secret) are write-only: empty keeps them.

import { useState } from "preact/hooks";
import * as admin from "../api/admin";
import type { AdminMcpServer, Approval, AuthType, McpCheck, McpServerIn, Transport } from "../api/admin";
import type { Availability, McpServerStatus } from "../api/types";
import { AdminPage, Alert, Check, Select, Status, TextField, lines, names, numberOrNull, pairs, useAction, useLoad } from "./ui";

const AVAILABILITY: { value: Availability; label: string }[] = [
  { value: "default_off", label: "Offered, off by default" },
  { value: "default_on", label: "Offered, on by default" },
  { value: "force_on", label: "Always on (users cannot turn it off)" },
];

const APPROVAL: { value: Approval; label: string }[] = [
  { value: "never", label: "Never" },
  { value: "unless_read_only", label: "Unless read-only" },
  { value: "always", label: "Always" },
];
// The choices stay short (a select is cut at its column's width); what each means is said under it.
const APPROVAL_HINT = "Never: tools run when the model calls them. Unless read-only: the chat's owner approves each call of a tool not marked readOnlyHint. Always: the owner approves every call.";

export function McpServers() {
  const list = useLoad(() => admin.listMcpServers());
  const [editing, setEditing] = useState<AdminMcpServer | "new" | null>(null);
  const [checks, setChecks] = useState<Record<string, McpCheck | "testing">>({});
  const row = useAction();
  const test = (s: AdminMcpServer) => row.run(async () => {
    setChecks((c) => ({ ...c, [s.id]: "testing" }));
    try {
      const result = await admin.checkMcpServer(s.id);
      setChecks((c) => ({ ...c, [s.id]: result }));
      list.reload(); // the check updated the server's status
    } catch (e) {
      setChecks((c) => { const { [s.id]: _, ...rest } = c; return rest; });
      throw e;
    }
  });
  return (
    <AdminPage title="MCP servers" lead="Tool servers the model may use: over HTTP, or a local command speaking stdio." error={list.error}>
      {list.data && list.data.length === 0 && <p>No MCP server yet.</p>}
      {list.data && list.data.length > 0 && (
        <ul class="admin-server-list">
          {list.data.map((s) => (
            <li key={s.id} class="admin-form" aria-label={s.display_name}>
              <div class="admin-actions">
                <strong>{s.display_name}</strong> <code>{s.slug}</code>
                <span class="admin-tag">{s.transport === "stdio" ? "stdio" : s.transport === "sse" ? "SSE" : "HTTP"}</span>
                <span class={"admin-tag " + (s.enabled ? "on" : "off")}>{s.enabled ? "enabled" : "disabled"}</span>
                <span class="admin-tag">{AVAILABILITY.find((a) => a.value === s.availability)?.label}</span>
                <HealthTag status={s.status} />
              </div>
              <HealthDetail status={s.status} shown={failedCheck(checks[s.id])} />
              <p class="muted">{s.transport === "stdio" ? [s.command, ...(s.args ?? [])].join(" ") : s.url}{s.description ? ` — ${s.description}` : ""}</p>
              <div class="admin-actions">
                <button type="button" class="small" disabled={checks[s.id] === "testing"} onClick={() => test(s)} aria-label={`Test ${s.display_name}`}>Test</button>
                <button type="button" class="small" onClick={() => setEditing(s)} aria-label={`Edit ${s.display_name}`}>Edit</button>
                <button type="button" class="small danger" onClick={() => {
                  if (confirm(`Delete the MCP server ${s.display_name}? Chats lose its tools.`)) void row.run(async () => { await admin.deleteMcpServer(s.id); list.reload(); });
                }} aria-label={`Delete ${s.display_name}`}>Delete</button>
              </div>
              <CheckResult check={checks[s.id]} name={s.display_name} />
            </li>
          ))}
        </ul>
      )}
      {row.error && <Alert>{row.error}</Alert>}
      {editing === null ? (
        <div class="admin-actions"><button type="button" class="primary" onClick={() => setEditing("new")}>Add MCP server</button></div>
      ) : (
        <ServerForm key={editing === "new" ? "new" : editing.id} server={editing === "new" ? null : editing}
          onDone={(saved) => {
            setEditing(null);
            list.reload();
            if (saved) void test(saved);
          }} />
      )}
    </AdminPage>
  );
}

const HEALTH: Record<McpServerStatus["state"], { label: string; cls: string }> = {
  unknown: { label: "not tried yet", cls: "" },
  connected: { label: "connected", cls: "on" },
  failing: { label: "failing", cls: "bad" },
  unauthorized: { label: "credentials refused", cls: "bad" },
};

function when(iso: string | null): string {
  return iso ? new Date(iso).toLocaleString() : "";
}

// The server's state as the last turn or check on any replica found it.
function HealthTag({ status }: { status: McpServerStatus | undefined }) {
  if (!status) return null;
  const h = HEALTH[status.state];
  // The count the last connect or check found: it stays after a reload, as the state does.
  const n = status.state === "connected" ? status.tool_count : null;
  const label = n != null ? `${h.label}, ${n} tool${n === 1 ? "" : "s"}` : h.label;
  return <span class={"admin-tag " + h.cls} title={status.checked_at ? `as of ${when(status.checked_at)}` : undefined}>{label}</span>;
}

/** The error a failed Test shows on the card (in an alert below), if any. */
function failedCheck(check: McpCheck | "testing" | undefined): string | undefined {
  return check && check !== "testing" && !check.ok ? check.error?.message : undefined;
}

/** `shown`: the error a Test just showed. The check recorded it as the server's last error too (cut
 * to the status's length): the card then says when, and leaves the words to the alert. */
function HealthDetail({ status, shown }: { status: McpServerStatus | undefined; shown?: string }) {
  if (!status || (status.state !== "failing" && status.state !== "unauthorized")) return null;
  const repeated = !!status.reason && !!shown && shown.startsWith(status.reason);
  return (
    <p class="admin-health" role="note">
      Last error {when(status.last_error_at)}{status.reason && !repeated ? `: ${status.reason}` : ""}
      {status.last_connected_at ? <span class="muted"> (last connected {when(status.last_connected_at)})</span> : null}
    </p>
  );
}

function CheckResult({ check, name }: { check: McpCheck | "testing" | undefined; name: string }) {
  if (check === undefined) return null;
  if (check === "testing") return <p role="status">Connecting to {name}…</p>;
  return (
    <div>
      {check.ok ? <Status>{name} works: {check.tools.length} tool{check.tools.length === 1 ? "" : "s"}.</Status> : <Alert>{check.error?.message}</Alert>}
      {check.tools.length > 0 && (
        <ul class="admin-tools" aria-label={`Tools of ${name}`}>
          {check.tools.map((t) => <li key={t.name}><code>{t.name}</code>{t.description ? <span class="muted"> — {t.description}</span> : null}</li>)}
        </ul>
      )}
    </div>
  );
}

function ServerForm({ server, onDone }: { server: AdminMcpServer | null; onDone: (saved: AdminMcpServer | null) => void }) {
  const s = server;
  const [slug, setSlug] = useState(s?.slug ?? "");
  const [display, setDisplay] = useState(s?.display_name ?? "");
  const [description, setDescription] = useState(s?.description ?? "");
  const [transport, setTransport] = useState<Transport>(s?.transport ?? "streamable_http");
  const [url, setUrl] = useState(s?.url ?? "");
  const [command, setCommand] = useState(s?.command ?? "");
  const [args, setArgs] = useState((s?.args ?? []).join("\n"));
  const [env, setEnv] = useState("");
  const [dropEnv, setDropEnv] = useState<string[]>([]);
  const [auth, setAuth] = useState<AuthType>(s?.auth_type ?? "none");
  const [keyHeader, setKeyHeader] = useState(s?.api_key_header ?? "Authorization");
  const [keyValue, setKeyValue] = useState("");
  const [headers, setHeaders] = useState("");
  const [clientId, setClientId] = useState(s?.oauth2?.client_id ?? "");
  const [clientSecret, setClientSecret] = useState("");
  const [authorizeUrl, setAuthorizeUrl] = useState(s?.oauth2?.authorize_url ?? "");
  const [tokenUrl, setTokenUrl] = useState(s?.oauth2?.token_url ?? "");
  const [scopes, setScopes] = useState(s?.oauth2?.scopes ?? "");
  const [grant, setGrant] = useState(s?.oauth2?.grant_type ?? "authorization_code");
  const [allow, setAllow] = useState((s?.tool_allow_list ?? []).join(", "));
  const [deny, setDeny] = useState((s?.tool_deny_list ?? []).join(", "));
  const [availability, setAvailability] = useState<Availability>(s?.availability ?? "default_on");
  const [enabled, setEnabled] = useState(s?.enabled ?? true);
  const [identity, setIdentity] = useState(s?.forward_identity ?? false);
  const [connectTimeout, setConnectTimeout] = useState(s?.connect_timeout_s?.toString() ?? "");
  const [callTimeout, setCallTimeout] = useState(s?.call_timeout_s?.toString() ?? "");
  const [approval, setApproval] = useState<Approval>(s?.approval ?? "never");
  const [overrides, setOverrides] = useState(Object.entries(s?.approval_overrides ?? {}).map(([k, v]) => `${k}=${v}`).join("\n"));
  const saving = useAction();
  const stdio = transport === "stdio";
  const title = s ? `Edit ${s.display_name}` : "New MCP server";

  const submit = () => saving.run(async () => {
    const ct = numberOrNull(connectTimeout);
    const kt = numberOrNull(callTimeout);
    for (const t of [ct, kt]) if (t !== null && !(t > 0)) throw new Error("Timeouts are seconds, more than 0 (empty for the default).");
    const body: McpServerIn = {
      slug: slug.trim(), display_name: display.trim(), description: description.trim(), transport,
      auth_type: stdio ? "none" : auth, availability, enabled, forward_identity: identity,
      tool_allow_list: names(allow), tool_deny_list: names(deny),
      approval, approval_overrides: pairs(overrides, "=") as Record<string, Approval>,
    };
    if (s) {
      // Null puts a timeout back to the default; only send what the form holds.
      body.connect_timeout_s = ct;
      body.call_timeout_s = kt;
    } else {
      if (ct !== null) body.connect_timeout_s = ct;
      if (kt !== null) body.call_timeout_s = kt;
    }
    if (stdio) {
      body.command = command.trim();
      body.args = lines(args);
      const set: Record<string, string | null> = pairs(env, "=");
      for (const n of dropEnv) set[n] = null;
      if (Object.keys(set).length) body.env = set;
    } else {
      body.url = url.trim();
      if (auth === "api_key") {
        body.api_key_header = keyHeader.trim() || "Authorization";
        if (keyValue) body.api_key_value = keyValue;
      }
      if (auth === "custom_headers" && headers.trim()) body.custom_headers = pairs(headers, ":");
      if (auth === "oauth2") {
        body.oauth2 = {
          client_id: clientId.trim() || null, authorize_url: authorizeUrl.trim() || null, token_url: tokenUrl.trim() || null,
          scopes: scopes.trim() || null, grant_type: grant, ...(clientSecret ? { client_secret: clientSecret } : {}),
        };
      }
    }
    const saved = s ? await admin.updateMcpServer(s.id, body) : await admin.createMcpServer(body);
    onDone(saved);
  });

  return (
    <form class="admin-form" aria-label={title} onSubmit={(e) => { e.preventDefault(); void submit(); }}>
      <h2>{title}</h2>
      <div class="admin-grid">
        <TextField label="Display name" value={display} onInput={setDisplay} required />
        <TextField label="Slug" value={slug} onInput={setSlug} required hint="Lowercase letters, digits, '-'; prefixes the tool names (slug__tool)." />
        <TextField label="Description" value={description} onInput={setDescription} />
        <Select label="Transport" value={transport} onChange={setTransport} options={[
          { value: "streamable_http", label: "Streamable HTTP" }, { value: "sse", label: "SSE (older servers)" }, { value: "stdio", label: "stdio (a local command)" },
        ]} />
      </div>
      {stdio ? (
        <fieldset>
          <legend>Command</legend>
          <div class="admin-grid">
            <TextField label="Command" value={command} onInput={setCommand} required placeholder="npx" hint="An absolute path is safest; the server's PATH is minimal." />
            <TextField label="Arguments (one per line)" value={args} onInput={setArgs} multiline placeholder={"-y\n@modelcontextprotocol/server-everything"} />
            <TextField label="Environment variables (NAME=value, one per line)" value={env} onInput={setEnv} multiline
              hint={s?.env_names?.length ? "Lines here add or replace variables; the others keep their saved values." : "Values are stored encrypted and never shown again."} />
          </div>
          {s?.env_names && s.env_names.length > 0 && (
            <div class="admin-actions" role="group" aria-label="Saved environment variables">
              <span class="admin-label">Saved:</span>
              {s.env_names.map((n) => (
                <Check key={n} label={`Remove ${n}`} checked={dropEnv.includes(n)}
                  onChange={(on) => setDropEnv(on ? [...dropEnv, n] : dropEnv.filter((x) => x !== n))} />
              ))}
            </div>
          )}
        </fieldset>
      ) : (
        <fieldset>
          <legend>Connection</legend>
          <div class="admin-grid">
            <TextField label="URL" value={url} onInput={setUrl} required type="url" placeholder="https://mcp.example.com/mcp" />
            <Select label="Authentication" value={auth} onChange={setAuth} options={[
              { value: "none", label: "None" }, { value: "api_key", label: "API key header" },
              { value: "custom_headers", label: "Custom headers" }, { value: "oauth2", label: "OAuth2" },
            ]} />
          </div>
          {auth === "api_key" && (
            <div class="admin-grid">
              <TextField label="Header name" value={keyHeader} onInput={setKeyHeader} />
              <TextField label="Key value" type="password" value={keyValue} onInput={setKeyValue} autoComplete="new-password"
                hint={s?.api_key_set ? "A key is saved; leave empty to keep it." : "Stored encrypted."} />
            </div>
          )}
          {auth === "custom_headers" && (
            <TextField label="Headers (Name: value, one per line)" value={headers} onInput={setHeaders} multiline
              hint={s?.custom_header_names?.length ? `Saved: ${s.custom_header_names.join(", ")}. Leave empty to keep them; anything typed replaces them all.` : "Stored encrypted."} />
          )}
          {auth === "oauth2" && (
            <div class="admin-grid">
              <Select label="Grant" value={grant} onChange={setGrant} options={[
                { value: "authorization_code", label: "Each user connects (authorization code)" },
                { value: "client_credentials", label: "Server to server (client credentials)" },
              ]} />
              <TextField label="Client ID" value={clientId} onInput={setClientId} hint="Empty: registered automatically when the server allows it." />
              <TextField label="Client secret" type="password" value={clientSecret} onInput={setClientSecret} autoComplete="new-password"
                hint={s?.oauth2?.client_secret_set ? "A secret is saved; leave empty to keep it." : undefined} />
              <TextField label="Authorize URL" value={authorizeUrl} onInput={setAuthorizeUrl} hint="Empty: discovered from the server." />
              <TextField label="Token URL" value={tokenUrl} onInput={setTokenUrl} />
              <TextField label="Scopes" value={scopes} onInput={setScopes} />
            </div>
          )}
          <Check label="Send the user and chat IDs (X-Chatd-User-Id, X-Chatd-Chat-Id)" checked={identity} onChange={setIdentity} />
        </fieldset>
      )}
      <fieldset>
        <legend>Tools and availability</legend>
        <div class="admin-grid">
          <TextField label="Only these tools (allow list)" value={allow} onInput={setAllow} hint="Tool names, comma-separated; empty allows all." />
          <TextField label="Never these tools (deny list)" value={deny} onInput={setDeny} hint="Tool names, comma-separated." />
          <Select label="Availability" value={availability} onChange={setAvailability} options={AVAILABILITY} />
          <Select label="Approval before a tool runs" value={approval} onChange={setApproval} options={APPROVAL} hint={APPROVAL_HINT} />
          <TextField label="Approval per tool" multiline rows={2} value={overrides} onInput={setOverrides}
            hint="One tool=never|always|unless_read_only per line (the tool's name on the server); wins over the setting above." />
          <TextField label="Connect timeout (seconds)" type="number" value={connectTimeout} onInput={setConnectTimeout}
            hint={`Empty: ${stdio ? "60" : "10"} s${stdio ? " (a command needs time to start)" : ""}.`} />
          <TextField label="Call timeout (seconds)" type="number" value={callTimeout} onInput={setCallTimeout} hint="Without a result or progress. Empty: 60 s." />
        </div>
        <Check label="Enabled" checked={enabled} onChange={setEnabled} hint="A disabled server is offered to no chat." />
      </fieldset>
      <div class="admin-actions">
        <button type="submit" class="primary" disabled={saving.busy}>{s ? "Save and test" : "Add and test"}</button>
        <button type="button" onClick={() => onDone(null)}>Cancel</button>
      </div>
      {saving.error && <Alert>{saving.error}</Alert>}
    </form>
  );
}
