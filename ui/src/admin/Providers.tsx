// Providers: add, edit (the key is write-only: empty keeps it), test the connection, list a saved
// provider's models, delete. Several providers may share a kind (Ollama and vLLM, both
// OpenAI-compatible); each has its own unique name.

import { useState } from "preact/hooks";
import * as admin from "../api/admin";
import type { Provider, ProviderCheck, ProviderKind } from "../api/admin";
import { AdminPage, Alert, Check, Select, Status, TextField, useAction, useLoad } from "./ui";

export function Providers() {
  const list = useLoad(() => admin.listProviders());
  const [editing, setEditing] = useState<Provider | "new" | null>(null);
  const [models, setModels] = useState<{ id: string; check: ProviderCheck } | null>(null);
  const row = useAction();
  return (
    <AdminPage title="Providers" lead="Where models run: each provider has a name, a kind, a base URL and an API key. Add as many of one kind as you need." error={list.error}>
      {list.data && list.data.length === 0 && <p>No provider yet. <a href="#/admin/setup">Run the setup</a> or add one below.</p>}
      {list.data && list.data.length > 0 && (
        <div class="admin-table-wrap">
          <table class="admin-table">
            <thead><tr><th>Name</th><th>Display name</th><th>Kind</th><th>Base URL</th><th>API key</th><th>Enabled</th><th><span class="visually-hidden">Actions</span></th></tr></thead>
            <tbody>
              {list.data.map((p) => (
                <tr key={p.id}>
                  <td><code>{p.name}</code></td>
                  <td>{p.display_name}</td>
                  <td>{p.provider}</td>
                  <td>{p.base_url ?? <span class="muted">default</span>}</td>
                  <td>{p.api_key_set ? "set" : <span class="muted">none</span>}</td>
                  <td>{p.enabled ? "yes" : "no"}</td>
                  <td><div class="admin-actions">
                    {/* The row says whose: its name is in the buttons' accessible names only. */}
                    <button type="button" class="small" aria-label={`Models of ${p.name}`}
                      onClick={() => row.run(async () => setModels({ id: p.id, check: await admin.providerModels(p.id) }))}>Models</button>
                    <button type="button" class="small" aria-label={`Edit ${p.name}`} onClick={() => setEditing(p)}>Edit</button>
                    <button type="button" class="small danger" aria-label={`Delete ${p.name}`} onClick={() => {
                      if (confirm(`Delete the provider ${p.name}?`)) void row.run(async () => { await admin.deleteProvider(p.id); list.reload(); });
                    }}>Delete</button>
                    </div>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {row.error && <Alert>{row.error}</Alert>}
      {models && <ModelList check={models.check} name={list.data?.find((p) => p.id === models.id)?.name ?? ""} />}
      {editing === null ? (
        <div class="admin-actions"><button type="button" class="primary" onClick={() => setEditing("new")}>Add provider</button></div>
      ) : (
        <ProviderForm
          key={editing === "new" ? "new" : editing.id}
          provider={editing === "new" ? null : editing}
          others={(list.data ?? []).filter((p) => editing === "new" || p.id !== editing.id)}
          onDone={() => { setEditing(null); list.reload(); }}
        />
      )}
    </AdminPage>
  );
}

function ModelList({ check, name }: { check: ProviderCheck; name: string }) {
  if (!check.ok) return <Alert>Listing the models of {name} failed: {check.error?.message}</Alert>;
  return (
    <section aria-label={`Models of ${name}`}>
      <Status>{name} offers {check.models.length} model{check.models.length === 1 ? "" : "s"}.</Status>
      <ul class="admin-tools">
        {check.models.slice(0, 200).map((m) => (
          <li key={m.id}><code>{m.id}</code>{m.context_limit ? <span class="muted"> · {m.context_limit.toLocaleString()} tokens</span> : null}</li>
        ))}
      </ul>
      <p><a href="#/admin/models">Add models</a></p>
    </section>
  );
}

export function ProviderForm({ provider, others, onDone }: { provider: Provider | null; others: Provider[]; onDone: () => void }) {
  const [kind, setKind] = useState<ProviderKind>(provider?.provider ?? "openai-compatible");
  const [name, setName] = useState(provider?.name ?? "");
  const [display, setDisplay] = useState(provider && provider.display_name !== provider.name ? provider.display_name : "");
  const [baseUrl, setBaseUrl] = useState(provider?.base_url ?? (provider ? "" : admin.PROVIDER_KINDS[0].baseUrl));
  const [apiKey, setApiKey] = useState("");
  const [enabled, setEnabled] = useState(provider?.enabled ?? true);
  const [check, setCheck] = useState<ProviderCheck | null>(null);
  const testing = useAction();
  const saving = useAction();
  const title = provider ? `Edit ${provider.name}` : "New provider";
  // A new provider's name when left empty: its kind, or the kind numbered when that is taken.
  const defaultName = provider?.name ?? admin.freeProviderName(kind, others);
  return (
    <form class="admin-form" aria-label={title} onSubmit={(e) => {
      e.preventDefault();
      void saving.run(async () => {
        const body = {
          name: name.trim() || defaultName, display_name: display.trim() || null, base_url: baseUrl.trim() || null, enabled,
          ...(apiKey.trim() ? { api_key: apiKey.trim() } : {}),
        };
        if (provider) await admin.updateProvider(provider.id, body);
        else await admin.createProvider({ provider: kind, ...body });
        onDone();
      });
    }}>
      <h2>{title}</h2>
      <div class="admin-grid">
        {provider ? <p><span class="admin-label">Kind</span><br />{provider.provider}</p> : (
          <Select label="Provider kind" value={kind} onChange={(k) => { setKind(k); setBaseUrl(admin.PROVIDER_KINDS.find((x) => x.kind === k)!.baseUrl); }}
            options={admin.PROVIDER_KINDS.map((k) => ({ value: k.kind, label: k.label }))} />
        )}
        <TextField label="Name" value={name} onInput={setName} placeholder={defaultName}
          hint="Unique: letters, digits, '.', '_' or '-' (e.g. ollama, vllm). Tells providers of one kind apart." />
        <TextField label="Display name" value={display} onInput={setDisplay} placeholder={name.trim() || defaultName} />
        <TextField label="Base URL" value={baseUrl} onInput={setBaseUrl} required={admin.needsBaseUrl(kind)} hint={admin.baseUrlHint(kind)} />
        <TextField label="API key" type="password" value={apiKey} onInput={setApiKey} autoComplete="new-password"
          hint={provider?.api_key_set ? "A key is saved; leave empty to keep it." : "Stored encrypted; never shown again."} />
      </div>
      <Check label="Enabled" checked={enabled} onChange={setEnabled} />
      <div class="admin-actions">
        <button type="button" disabled={testing.busy} onClick={() => testing.run(async () => {
          setCheck(null);
          setCheck(await admin.testProvider({
            provider: provider?.provider ?? kind, base_url: baseUrl.trim() || null, api_key: apiKey.trim() || null,
            ...(provider ? { provider_id: provider.id } : {}),
          }));
        })}>{testing.busy ? "Testing…" : "Test connection"}</button>
        <button type="submit" class="primary" disabled={saving.busy}>{provider ? "Save provider" : "Add the provider"}</button>
        <button type="button" onClick={onDone}>Cancel</button>
      </div>
      {check?.ok && <Status>Connected: {check.models.length} model{check.models.length === 1 ? "" : "s"} found.</Status>}
      {check && !check.ok && <Alert>Connection failed: {check.error?.message}</Alert>}
      {testing.error && <Alert>{testing.error}</Alert>}
      {saving.error && <Alert>{saving.error}</Alert>}
    </form>
  );
}
