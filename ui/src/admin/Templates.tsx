// Workspace templates: what a chat's workspace starts from (a git repository or a local path, and
// an init script). The API creates and lists them.

import { useState } from "preact/hooks";
import * as admin from "../api/admin";
import { AdminPage, Alert, Check, Status, TextField, useAction, useLoad } from "./ui";

export function Templates() {
  const list = useLoad(() => admin.listTemplates());
  const [name, setName] = useState("");
  const [display, setDisplay] = useState("");
  const [description, setDescription] = useState("");
  const [gitUrl, setGitUrl] = useState("");
  const [gitRef, setGitRef] = useState("");
  const [source, setSource] = useState("");
  const [script, setScript] = useState("");
  const [outside, setOutside] = useState(false);
  const [created, setCreated] = useState<string | null>(null);
  const act = useAction();
  return (
    <AdminPage title="Workspace templates" lead="Where a chat's workspace comes from: a git repository or a directory, then an init script." error={list.error}>
      {list.data && list.data.length === 0 && <p>No template yet.</p>}
      {list.data && list.data.length > 0 && (
        <div class="admin-table-wrap">
          <table class="admin-table">
            <thead><tr><th>Name</th><th>Source</th><th>Description</th></tr></thead>
            <tbody>
              {list.data.map((t) => (
                <tr key={t.id}>
                  <td>{t.display_name || t.name} <code>{t.name}</code>{t.deprecated && <span class="admin-tag off"> deprecated</span>}</td>
                  <td>{t.git_url ? `${t.git_url}${t.git_ref ? ` @ ${t.git_ref}` : ""}` : t.source_path ?? <span class="muted">empty</span>}</td>
                  <td>{t.description}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <form class="admin-form" aria-label="New template" onSubmit={(e) => {
        e.preventDefault();
        void act.run(async () => {
          const t = await admin.createTemplate({
            name: name.trim(), display_name: display.trim(), description: description.trim(), git_url: gitUrl.trim() || null,
            git_ref: gitRef.trim() || null, source_path: source.trim() || null, init_script: script, allow_outside: outside,
          });
          setCreated(t.name);
          setName(""); setDisplay(""); setDescription(""); setGitUrl(""); setGitRef(""); setSource(""); setScript(""); setOutside(false);
          list.reload();
        });
      }}>
        <h2>New template</h2>
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
        <div class="admin-actions"><button type="submit" class="primary" disabled={act.busy}>Create template</button></div>
        {created && <Status>Created the template {created}.</Status>}
        {act.error && <Alert>{act.error}</Alert>}
      </form>
    </AdminPage>
  );
}
