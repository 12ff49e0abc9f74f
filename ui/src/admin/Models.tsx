// Model configs: which models people may pick, their context limit, pricing and the default.

import { useState } from "preact/hooks";
import * as admin from "../api/admin";
import type { ModelConfig } from "../api/types";
import { DEFAULT_CONTEXT } from "./Setup";
import { AdminPage, Alert, Check, Select, Status, TextField, numberOrNull, useAction, useLoad } from "./ui";

const PRICES = [
  ["input", "Input"], ["output", "Output"], ["cache_read", "Cache read"], ["cache_write", "Cache write"],
] as const;

/** $ per million tokens as typed -> micro-dollars per million tokens (the API's unit). */
function toMicros(text: string): number | null {
  const n = numberOrNull(text);
  return n === null ? null : Math.round(n * 1e6);
}
const fromMicros = (m: number | null | undefined) => (m === null || m === undefined ? "" : String(m / 1e6));

export function Models() {
  const list = useLoad(() => admin.listModelConfigs());
  const providers = useLoad(() => admin.listProviders());
  const [editing, setEditing] = useState<ModelConfig | "new" | null>(null);
  const row = useAction();
  return (
    <AdminPage title="Models" lead="The models people pick from, with their context limit and price per million tokens." error={list.error}>
      {list.data && list.data.length === 0 && <p>No model yet. <a href="#/admin/setup">Run the setup</a> or add one below.</p>}
      {list.data && list.data.length > 0 && (
        <div class="admin-table-wrap">
          <table class="admin-table">
            <thead><tr><th>Name</th><th>Provider</th><th>Model</th><th>Context</th><th>$ in / out per Mtok</th><th>Status</th><th><span class="visually-hidden">Actions</span></th></tr></thead>
            <tbody>
              {list.data.map((m) => (
                <tr key={m.id}>
                  <td>{m.display_name}</td>
                  <td>{m.provider_name}</td>
                  <td><code>{m.model}</code></td>
                  <td class="num">{m.context_limit.toLocaleString()}</td>
                  <td class="num">{fromMicros(m.pricing.input) || "—"} / {fromMicros(m.pricing.output) || "—"}</td>
                  <td>
                    {m.is_default && <span class="admin-tag on">default</span>} {!m.enabled && <span class="admin-tag off">disabled</span>}
                  </td>
                  <td><div class="admin-actions">
                    {!m.is_default && (
                      <button type="button" class="small" aria-label={`Make default: ${m.display_name}`}
                        onClick={() => row.run(async () => { await admin.updateModelConfig(m.id, { is_default: true }); list.reload(); })}>Make default</button>
                    )}
                    <button type="button" class="small" aria-label={`Edit ${m.display_name}`} onClick={() => setEditing(m)}>Edit</button>
                    <button type="button" class="small danger" aria-label={`Delete ${m.display_name}`} onClick={() => {
                      if (confirm(`Delete the model ${m.display_name}? Chats using it fall back to the default.`)) void row.run(async () => { await admin.deleteModelConfig(m.id); list.reload(); });
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
      {editing === null ? (
        <div class="admin-actions"><button type="button" class="primary" onClick={() => setEditing("new")}>Add model</button></div>
      ) : (
        <ModelForm key={editing === "new" ? "new" : editing.id} model={editing === "new" ? null : editing}
          providers={providers.data ?? []} onDone={() => { setEditing(null); list.reload(); }} />
      )}
    </AdminPage>
  );
}

function ModelForm({ model, providers, onDone }: { model: ModelConfig | null; providers: admin.Provider[]; onDone: () => void }) {
  const [chosenProvider, setProvider] = useState<string>(model?.provider_id ?? "");
  // The providers may still be loading when the form opens: the first one once they are there.
  const providerId = chosenProvider || providers[0]?.id || "";
  const [name, setName] = useState(model?.model ?? "");
  const [display, setDisplay] = useState(model?.display_name ?? "");
  const [context, setContext] = useState(String(model?.context_limit ?? DEFAULT_CONTEXT));
  const [threshold, setThreshold] = useState(String(model?.compression_threshold ?? 70));
  const [maxOut, setMaxOut] = useState(String((model?.options as { max_output_tokens?: number | null } | undefined)?.max_output_tokens ?? ""));
  const [prices, setPrices] = useState<Record<string, string>>(
    Object.fromEntries(PRICES.map(([k]) => [k, fromMicros(model?.pricing[k])])),
  );
  const [isDefault, setIsDefault] = useState(model?.is_default ?? false);
  const [enabled, setEnabled] = useState(model?.enabled ?? true);
  const [images, setImages] = useState((model?.options as { images?: boolean } | undefined)?.images ?? true);
  const [found, setFound] = useState<admin.DiscoveredModel[]>([]);
  const loading = useAction();
  const saving = useAction();
  const saved = providers.find((p) => p.id === providerId);
  const title = model ? `Edit ${model.display_name}` : "New model";
  return (
    <form class="admin-form" aria-label={title} onSubmit={(e) => {
      e.preventDefault();
      void saving.run(async () => {
        const ctx = Number(context);
        if (!Number.isInteger(ctx) || ctx <= 0) throw new Error("The context limit is a whole number of tokens.");
        const pricing = Object.fromEntries(PRICES.map(([k]) => [k, toMicros(prices[k])]));
        if (Object.values(pricing).some((v) => v !== null && (Number.isNaN(v) || v < 0))) throw new Error("Prices are dollars per million tokens, 0 or more.");
        const out = numberOrNull(maxOut);
        if (!providerId) throw new Error("Add a provider first (Admin → Providers).");
        const body: admin.ModelConfigIn = {
          provider_id: providerId, model: name.trim(), display_name: display.trim() || name.trim(), context_limit: ctx,
          compression_threshold: Number(threshold), is_default: isDefault, enabled, pricing,
          options: { max_output_tokens: out, images },
        };
        if (model) await admin.updateModelConfig(model.id, body);
        else await admin.createModelConfig(body);
        onDone();
      });
    }}>
      <h2>{title}</h2>
      <div class="admin-grid">
        <Select label="Provider" value={providerId} onChange={(id) => { setProvider(id); setFound([]); }}
          options={providers.map((p) => ({ value: p.id, label: p.display_name && p.display_name !== p.name ? `${p.name} — ${p.display_name} (${p.provider})` : `${p.name} (${p.provider})` }))} />
        <TextField label="Model name" value={name} onInput={setName} required list="model-suggestions" hint="As the provider spells it." />
        <TextField label="Display name" value={display} onInput={setDisplay} placeholder={name} />
        <TextField label="Context limit (tokens)" type="number" value={context} onInput={setContext} required />
        <TextField label="Compress history at (% of context)" type="number" value={threshold} onInput={setThreshold} hint="0 never compresses." />
        <TextField label="Max output tokens" type="number" value={maxOut} onInput={setMaxOut} hint="Empty: the server's default." />
      </div>
      <datalist id="model-suggestions">{found.map((m) => <option key={m.id} value={m.id}>{m.display_name}</option>)}</datalist>
      {saved && (
        <div class="admin-actions">
          <button type="button" disabled={loading.busy} onClick={() => loading.run(async () => {
            const check = await admin.providerModels(saved.id);
            if (!check.ok) throw new Error(check.error?.message ?? "Listing the models failed.");
            setFound(check.models);
          })}>Suggest models from {saved.name}</button>
          {found.length > 0 && <Status>{found.length} models to pick from in Model name.</Status>}
        </div>
      )}
      {loading.error && <Alert>{loading.error}</Alert>}
      <fieldset>
        <legend>Price in dollars per million tokens</legend>
        <div class="admin-grid">
          {PRICES.map(([k, label]) => (
            <TextField key={k} label={`${label} price`} type="number" value={prices[k]} onInput={(v) => setPrices({ ...prices, [k]: v })} placeholder="not priced" />
          ))}
        </div>
      </fieldset>
      <Check label="Default model" checked={isDefault} onChange={setIsDefault} hint="New chats use it unless they pick another." />
      <Check label="Enabled" checked={enabled} onChange={setEnabled} />
      <Check label="Accepts images" checked={images} onChange={setImages}
        hint="Images MCP tools return are sent to the model; off for a text-only model (it reads a note instead)." />
      <div class="admin-actions">
        <button type="submit" class="primary" disabled={saving.busy}>{model ? "Save model" : "Add the model"}</button>
        <button type="button" onClick={onDone}>Cancel</button>
      </div>
      {saving.error && <Alert>{saving.error}</Alert>}
    </form>
  );
}
