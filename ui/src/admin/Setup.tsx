// First run: an admin on a server without models lands here (shell/App.tsx). Three short steps:
// connect a provider (tested before anything is saved), pick or type models, choose the default.

import { useState } from "preact/hooks";
import * as admin from "../api/admin";
import type { DiscoveredModel, ProviderCheck, ProviderKind } from "../api/admin";
import { navigate } from "../shell/router";
import { AdminPage, Alert, Select, Status, TextField, useAction, useLoad } from "./ui";

export const DEFAULT_CONTEXT = 128_000;

interface Chosen { model: string; label: string; context: string }

export function Setup() {
  const existing = useLoad(() => admin.listModelConfigs());
  const saved = useLoad(() => admin.listProviders());
  const [kind, setKind] = useState<ProviderKind>("openai-compatible");
  const [name, setName] = useState("");
  const [baseUrl, setBaseUrl] = useState(admin.PROVIDER_KINDS[0].baseUrl);
  const [apiKey, setApiKey] = useState("");
  const [check, setCheck] = useState<ProviderCheck | null>(null);
  const [filter, setFilter] = useState("");
  const [typed, setTyped] = useState("");
  const [chosen, setChosen] = useState<Chosen[]>([]);
  const [defaultModel, setDefaultModel] = useState<string | null>(null);
  const testing = useAction();
  const saving = useAction();
  const kindInfo = admin.PROVIDER_KINDS.find((k) => k.kind === kind)!;
  // What an empty name becomes: the name of the provider set up before at this kind and URL (see
  // finish), else the kind, numbered when a provider already has that name.
  const again = (saved.data ?? []).find((p) => p.provider === kind && (p.base_url ?? null) === (baseUrl.trim() || null));
  const defaultName = again?.name ?? admin.freeProviderName(kind, saved.data ?? []);

  const changeKind = (k: ProviderKind) => {
    setKind(k);
    setBaseUrl(admin.PROVIDER_KINDS.find((x) => x.kind === k)!.baseUrl);
    setCheck(null);
  };
  const test = () => testing.run(async () => {
    setCheck(null);
    setCheck(await admin.testProvider({ provider: kind, base_url: baseUrl.trim() || null, api_key: apiKey.trim() || null }));
  });
  const choose = (model: string, found?: DiscoveredModel) => {
    const name = model.trim();
    if (!name || chosen.some((c) => c.model === name)) return;
    setChosen([...chosen, { model: name, label: found?.display_name ?? name, context: String(found?.context_limit ?? DEFAULT_CONTEXT) }]);
    if (defaultModel === null) setDefaultModel(name);
  };
  const unchoose = (model: string) => {
    const rest = chosen.filter((c) => c.model !== model);
    setChosen(rest);
    if (defaultModel === model) setDefaultModel(rest[0]?.model ?? null);
  };
  const finish = () => saving.run(async () => {
    for (const c of chosen) {
      const n = Number(c.context);
      if (!Number.isInteger(n) || n <= 0) throw new Error(`The context limit of ${c.model} must be a whole number of tokens.`);
    }
    const providers = await admin.listProviders();
    const url = baseUrl.trim() || null;
    const named = name.trim();
    const body = { base_url: url, ...(apiKey.trim() ? { api_key: apiKey.trim() } : {}) };
    // The same kind at the same URL is the provider set up before (renamed when a name is typed);
    // another URL is another provider.
    const before = providers.find((p) => p.provider === kind && (p.base_url ?? null) === url);
    const provider = before
      ? await admin.updateProvider(before.id, { ...body, ...(named ? { name: named } : {}), enabled: true })
      : await admin.createProvider({ provider: kind, name: named || admin.freeProviderName(kind, providers), ...body, enabled: true });
    const configs = await admin.listModelConfigs();
    for (const c of chosen) {
      const isDefault = c.model === defaultModel;
      const same = configs.find((m) => m.provider_id === provider.id && m.model === c.model);
      if (same) await admin.updateModelConfig(same.id, { is_default: isDefault, enabled: true });
      else await admin.createModelConfig({ provider_id: provider.id, model: c.model, display_name: c.label, context_limit: Number(c.context), is_default: isDefault });
    }
    navigate("/");
  });

  const found = check?.ok ? check.models : [];
  const shown = filter ? found.filter((m) => (m.id + " " + m.display_name).toLowerCase().includes(filter.toLowerCase())) : found;
  return (
    <AdminPage
      title="Set up chatd"
      lead="Connect a model provider, pick the models people may use and the default one. You can change all of it later under Admin."
      error={existing.error}
    >
      {existing.data && existing.data.length > 0 && (
        <p>Models are already configured ({existing.data.length}). This adds a provider and more models. <a href="#/admin/models">Manage models</a>.</p>
      )}
      <form class="admin-form" aria-labelledby="setup-provider-h" onSubmit={(e) => { e.preventDefault(); void test(); }}>
        <h2 id="setup-provider-h">1. Provider</h2>
        <div class="admin-grid">
          <Select label="Provider kind" value={kind} onChange={changeKind}
            options={admin.PROVIDER_KINDS.map((k) => ({ value: k.kind, label: k.label }))} />
          <TextField label="Name" value={name} onInput={setName} placeholder={defaultName}
            hint={`Optional: ${again ? "keeps " : ""}${defaultName} if empty. Letters, digits, '.', '_' or '-' (e.g. ollama).`} />
          <TextField label="Base URL" value={baseUrl} onInput={setBaseUrl} required={admin.needsBaseUrl(kind)}
            placeholder={admin.needsBaseUrl(kind) ? "http://localhost:11434/v1" : "leave empty for the provider's own API"}
            hint={admin.baseUrlHint(kind)} />
          <TextField label="API key" type="password" value={apiKey} onInput={setApiKey} required={kindInfo.needsKey}
            autoComplete="new-password" hint={kindInfo.needsKey ? "Stored encrypted; never shown again." : "Optional for local servers."} />
        </div>
        <div class="admin-actions">
          <button type="submit" disabled={testing.busy}>{testing.busy ? "Testing…" : "Test connection"}</button>
          {check?.ok && <Status>Connected: {check.models.length} model{check.models.length === 1 ? "" : "s"} found.</Status>}
        </div>
        {testing.error && <Alert>{testing.error}</Alert>}
        {check && !check.ok && check.error && <Alert>Connection failed: {check.error.message}</Alert>}
      </form>

      <section class="admin-form" aria-labelledby="setup-models-h">
        <h2 id="setup-models-h">2. Models</h2>
        {found.length > 0 && (
          <fieldset>
            <legend>Models the provider offers</legend>
            {found.length > 8 && <TextField label="Filter models" value={filter} onInput={setFilter} />}
            <ul class="admin-models">
              {shown.slice(0, 200).map((m) => (
                <li key={m.id}>
                  <label class="admin-check">
                    <input type="checkbox" checked={chosen.some((c) => c.model === m.id)}
                      onChange={(e) => ((e.target as HTMLInputElement).checked ? choose(m.id, m) : unchoose(m.id))} />
                    <span>{m.display_name !== m.id ? `${m.display_name} (${m.id})` : m.id}</span>
                  </label>
                </li>
              ))}
            </ul>
          </fieldset>
        )}
        <div class="admin-actions">
          <TextField label="Model name" value={typed} onInput={setTyped} placeholder="e.g. llama3.2 or gpt-4.1"
            hint={found.length ? "Or type one the list does not show." : "Type the model's name as the provider spells it."} />
          <button type="button" onClick={() => { choose(typed); setTyped(""); }} disabled={!typed.trim()}>Add model</button>
        </div>
        {chosen.length > 0 && (
          <fieldset>
            <legend>Chosen models</legend>
            <div class="admin-chosen">
              <div class="admin-chosen-row admin-hint" aria-hidden="true"><span>Model</span><span>Default</span><span>Context limit (tokens)</span><span /></div>
              {chosen.map((c) => (
                <div class="admin-chosen-row" key={c.model}>
                  <strong>{c.model}</strong>
                  <label class="admin-check">
                    <input type="radio" name="default-model" checked={defaultModel === c.model} onChange={() => setDefaultModel(c.model)} />
                    <span class="visually-hidden">Default for {c.model}</span>
                  </label>
                  <TextField label={`Context limit of ${c.model} (tokens)`} hideLabel type="number" value={c.context}
                    onInput={(v) => setChosen(chosen.map((x) => (x.model === c.model ? { ...x, context: v } : x)))} />
                  <button type="button" class="small" onClick={() => unchoose(c.model)}>Remove<span class="visually-hidden"> {c.model}</span></button>
                </div>
              ))}
            </div>
          </fieldset>
        )}
      </section>

      <section class="admin-form" aria-labelledby="setup-finish-h">
        <h2 id="setup-finish-h">3. Finish</h2>
        <p class="muted">
          {chosen.length === 0
            ? "Choose at least one model."
            : `The provider ${name.trim().toLowerCase() || defaultName} (${kind}) and ${chosen.length} model${chosen.length === 1 ? "" : "s"} will be saved; ${defaultModel} is the default.`}
        </p>
        <div class="admin-actions">
          <button type="button" class="primary" disabled={chosen.length === 0 || saving.busy} onClick={finish}>
            {saving.busy ? "Saving…" : "Save and start chatting"}
          </button>
        </div>
        {saving.error && <Alert>{saving.error}</Alert>}
      </section>
    </AdminPage>
  );
}
