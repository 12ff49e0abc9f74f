// Users and their API tokens: create a user, disable or enable one (a disabled user's tokens are
// refused at once), create a token (shown once, with a sign-in link), list and revoke tokens.

import { Fragment } from "preact";
import { useState } from "preact/hooks";
import * as admin from "../api/admin";
import type { User } from "../api/types";
import { useSession } from "../shell/session";
import { AdminPage, Alert, Select, Status, TextField, useAction, useLoad } from "./ui";

export function Users() {
  const list = useLoad(() => admin.listUsers());
  const [username, setUsername] = useState("");
  const [role, setRole] = useState<"member" | "admin">("member");
  const [created, setCreated] = useState<string | null>(null);
  const [open, setOpen] = useState<string | null>(null);
  const adding = useAction();
  const toggling = useAction();
  const me = useSession().user;
  return (
    <AdminPage title="Users" lead="People who may sign in, and their API tokens." error={list.error}>
      <form class="admin-form" aria-label="New user" onSubmit={(e) => {
        e.preventDefault();
        void adding.run(async () => {
          const u = await admin.createUser({ username: username.trim(), role });
          setCreated(u.username);
          setUsername("");
          setOpen(u.id);
          list.reload();
        });
      }}>
        <h2>New user</h2>
        <div class="admin-grid">
          <TextField label="Username" value={username} onInput={setUsername} required />
          <Select label="Role" value={role} onChange={setRole} options={[{ value: "member", label: "Member" }, { value: "admin", label: "Admin" }]} />
        </div>
        <div class="admin-actions"><button type="submit" class="primary" disabled={adding.busy}>Create user</button></div>
        {created && <Status>Created {created}. Create a token below so they can sign in.</Status>}
        {adding.error && <Alert>{adding.error}</Alert>}
      </form>
      {list.data && (
        <div class="admin-table-wrap">
          <table class="admin-table">
            <thead><tr><th>User</th><th>Role</th><th>Since</th><th>State</th><th><span class="visually-hidden">Actions</span></th></tr></thead>
            <tbody>
              {list.data.map((u) => (
                <Fragment key={u.id}>
                  <tr>
                    <td>{u.username}</td>
                    <td>{u.role}</td>
                    <td>{new Date(u.created_at).toLocaleDateString()}</td>
                    <td>{u.disabled ? <span class="badge status-error" title={u.disabled_at ? `Disabled ${new Date(u.disabled_at).toLocaleString()}` : undefined}>disabled</span> : "active"}</td>
                    <td class="admin-row-actions">
                      {u.id !== me.id && (
                        <button type="button" class={u.disabled ? "small" : "small danger"} disabled={toggling.busy}
                          aria-label={`${u.disabled ? "Enable" : "Disable"} ${u.username}`} onClick={() => {
                          if (!u.disabled && !confirm(`Disable ${u.username}? Their tokens stop working at once; their chats are kept.`)) return;
                          void toggling.run(async () => { await admin.setUserDisabled(u.id, !u.disabled); list.reload(); });
                        }}>{u.disabled ? "Enable" : "Disable"}</button>
                      )}
                      <button type="button" class="small" aria-expanded={open === u.id} aria-label={`Tokens of ${u.username}`}
                        onClick={() => setOpen(open === u.id ? null : u.id)}>Tokens</button>
                    </td>
                  </tr>
                  {open === u.id && (
                    <tr><td colSpan={5}><Tokens user={u} /></td></tr>
                  )}
                </Fragment>
              ))}
            </tbody>
          </table>
          {toggling.error && <Alert>{toggling.error}</Alert>}
        </div>
      )}
    </AdminPage>
  );
}

function Tokens({ user }: { user: User }) {
  const me = useSession().user;
  const list = useLoad(() => admin.listUserTokens(user.id), [user.id]);
  const [name, setName] = useState("");
  const [token, setToken] = useState<string | null>(null);
  const act = useAction();
  const link = token ? `${location.origin}${location.pathname}#token=${encodeURIComponent(token)}` : "";
  return (
    <section class="admin-form" aria-label={`Tokens of ${user.username}`}>
      {list.error && <Alert>{list.error}</Alert>}
      {list.data && list.data.length === 0 && <p class="muted">{user.username} has no token.</p>}
      {list.data && list.data.length > 0 && (
        <ul class="admin-tools">
          {list.data.map((t) => (
            <li key={t.id} class="admin-actions">
              <span>{t.name}</span>
              <span class="muted">created {new Date(t.created_at).toLocaleString()} · {t.last_used_at ? `last used ${new Date(t.last_used_at).toLocaleString()}` : "never used"}</span>
              <button type="button" class="small danger" aria-label={`Revoke ${t.name}`} onClick={() => {
                const own = user.id === me.id ? " You may be signed in with it." : "";
                if (confirm(`Revoke the token ${t.name} of ${user.username}?${own}`)) void act.run(async () => { await admin.revokeToken(t.id); list.reload(); });
              }}>Revoke</button>
            </li>
          ))}
        </ul>
      )}
      <form class="admin-actions" aria-label={`New token for ${user.username}`} onSubmit={(e) => {
        e.preventDefault();
        void act.run(async () => {
          setToken((await admin.createToken(user.id, name.trim() || "token")).token);
          setName("");
          list.reload();
        });
      }}>
        <TextField label="Token name" value={name} onInput={setName} placeholder="laptop" />
        <button type="submit" disabled={act.busy}>Create token for {user.username}</button>
      </form>
      {token && (
        <div class="admin-token" role="status">
          <p>The new token, shown only now. Copy it or send {user.username} the sign-in link:</p>
          <code aria-label="New token">{token}</code>
          <div class="admin-actions">
            <button type="button" class="small" onClick={() => void navigator.clipboard?.writeText(token)}>Copy token</button>
            <button type="button" class="small" onClick={() => void navigator.clipboard?.writeText(link)}>Copy sign-in link</button>
          </div>
        </div>
      )}
      {act.error && <Alert>{act.error}</Alert>}
    </section>
  );
}
