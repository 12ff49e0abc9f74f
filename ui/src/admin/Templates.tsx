// Workspace templates: what a chat's workspace starts from (a git repository or a local path, and
// an init script). Admins create, edit, deprecate (hidden from new workspaces) and delete them;
// a change applies to workspaces made afterwards.

import { useState } from "preact/hooks";
import * as admin from "../api/admin";
import type { Template } from "../api/admin";
import { AdminPage, Alert, Check, Status, TextField, useAction, useLoad } from "./ui";

export function Templates() {
  // Deprecated ones too: hidden from new workspaces, but the admin must be able to restore them.
  const list = useLoad(() => admin.listTemplates(true));
  const [editing, setEditing] = useState<Template | null>(null);
  const [done, setDone] = useState<string | null>(null);
  const row = useAction();
  return (
    <AdminPage title="Workspace templates" lead="Where a chat's workspace comes from: a git repository or a directory, then an init script." error={list.error}>
      {list.data && list.data.length === 0 && <p>No template yet.</p>}
      {list.data && list.data.length > 0 && (
        <div class="admin-table-wrap">
          <table class="admin-table">
            <thead><tr><th>Name</th><th>Source</th><th>Description</th><th><span class="visually-hidden">Actions</span></th></tr></thead>
            <tbody>
              {list.data.map((t) => (
                <tr key={t.id}>
                  <td>{t.display_name || t.name} <code>{t.name}</code>{t.deprecated && <span class="admin-tag off"> deprecated</span>}</td>
                  <td>{t.git_url ? `${t.git_url}${t.git_ref ? ` @ ${t.git_ref}` : ""}` : t.source_path ?? <span class="muted">empty</span>}</td>
                  <td>{t.description}</td>
                  <td><div class="admin-actions">
                    <button type="button" class="small" onClick={() => { setDone(null); setEditing(t); }} aria-label={`Edit ${t.name}`}>Edit</button>
                    {t.deprecated ? (
                      <button type="button" class="small" disabled={row.busy} aria-label={`Restore ${t.name}`} onClick={() => {
                        void row.run(async () => { await admin.updateTemplate(t.id, { deprecated: false }); setDone(`Restored the template ${t.name}: new workspaces can use it again.`); list.reload(); });
                      }}>Restore</button>
                    ) : (
                      <button type="button" class="small" disabled={row.busy} aria-label={`Deprecate ${t.name}`} onClick={() => {
                        void row.run(async () => { await admin.updateTemplate(t.id, { deprecated: true }); setDone(`Deprecated the template ${t.name}: new workspaces no longer use it (Restore undoes it).`); list.reload(); });
                      }}>Deprecate</button>
                    )}
                    <button type="button" class="small danger" disabled={row.busy} aria-label={`Delete ${t.name}`} onClick={() => {
                      if (confirm(`Delete the template ${t.name}? Workspaces made from it keep working.`)) {
                        void row.run(async () => { await admin.deleteTemplate(t.id); if (editing?.id === t.id) setEditing(null); setDone(`Deleted the template ${t.name}.`); list.reload(); });
                      }
                    }}>Delete</button>
                  </div></td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {row.error && <Alert>{row.error}</Alert>}
      {done && <Status>{done}</Status>}
      <TemplateForm key={editing?.id ?? "new"} template={editing} onSaved={(t, created) => {
        setDone(created ? `Created the template ${t.name}.` : `Saved the template ${t.name}.`);
        setEditing(null);
        list.reload();
      }} onCancel={editing ? () => setEditing(null) : undefined} />
    </AdminPage>
  );
}

function TemplateForm({ template: t, onSaved, onCancel }: { template: Template | null; onSaved: (t: Template, created: boolean) => void; onCancel?: () => void }) {
  const [name, setName] = useState(t?.name ?? "");
  const [display, setDisplay] = useState(t?.display_name ?? "");
  const [description, setDescription] = useState(t?.description ?? "");
  const [gitUrl, setGitUrl] = useState(t?.git_url ?? "");
  const [gitRef, setGitRef] = useState(t?.git_ref ?? "");
  const [source, setSource] = useState(t?.source_path ?? "");
  const [script, setScript] = useState(t?.init_script ?? "");
  const [outside, setOutside] = useState(t?.allow_outside ?? false);
  const act = useAction();
  const title = t ? `Edit ${t.name}` : "New template";
  return (
    <form class="admin-form" aria-label={title} onSubmit={(e) => {
      e.preventDefault();
      void act.run(async () => {
        const body = {
          name: name.trim(), display_name: display.trim(), description: description.trim(), git_url: gitUrl.trim() || null,
          git_ref: gitRef.trim() || null, source_path: source.trim() || null, init_script: script, allow_outside: outside,
        };
        const saved = t ? await admin.updateTemplate(t.id, body) : await admin.createTemplate(body);
        onSaved(saved, !t);
      });
    }}>
      <h2>{title}</h2>
      <div class="admin-grid">
        <TextField label="Template name" value={name} onInput={setName} required hint="Lowercase letters, digits, '-' and '_'." />
        <TextField label="Display name" value={display} onInput={setDisplay} />
        <TextField label="Description" value={description} onInput={setDescription} />
        <TextField label="Git URL" value={gitUrl} onInput={setGitUrl} placeholder="https://github.com/org/repo.git" />
        <TextField label="Git ref" value={gitRef} onInput={setGitRef} placeholder="main" />
        <TextField label="Source directory" value={source} onInput={setSource} hint="Instead of git: a directory on this server to copy." />
      </div>
      <TextField label="Init script" value={script} onInput={setScript} multiline rows={4} hint="Runs in the new workspace (sh)." />
      <Check label="Allow commands to reach outside the workspace" checked={outside} onChange={setOutside} />
      {t && <p class="muted">Changes apply to workspaces made from now on.</p>}
      <div class="admin-actions">
        <button type="submit" class="primary" disabled={act.busy}>{t ? "Save template" : "Create template"}</button>
        {onCancel && <button type="button" onClick={onCancel}>Cancel</button>}
      </div>
      {act.error && <Alert>{act.error}</Alert>}
    </form>
  );
}
