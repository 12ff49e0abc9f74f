// Spend and limits: the global limit, and per user the spend this period, the limit that applies,
// and a limit of their own (set or removed).

import { useState } from "preact/hooks";
import * as admin from "../api/admin";
import type { Period, UserSpend } from "../api/admin";
import { AdminPage, Alert, Select, Status, TextField, useAction, useLoad } from "./ui";

const PERIODS: { value: Period; label: string }[] = [
  { value: "day", label: "per day" }, { value: "week", label: "per week" }, { value: "month", label: "per month" },
];

function micros(text: string): number {
  const n = Number(text);
  if (text.trim() === "" || !Number.isFinite(n) || n < 0) throw new Error("A limit is an amount in dollars, 0 or more.");
  return Math.round(n * 1e6);
}

export function Usage() {
  const spend = useLoad(() => admin.spendByUser());
  const g = spend.data?.global_limit;
  return (
    <AdminPage title="Usage and limits" lead="What each person spent this period (UTC calendar windows) and the limits that stop new turns." error={spend.error}>
      {spend.data && (
        <>
          <LimitForm
            key={"global-" + (g?.limit_micros ?? "none")}
            title="Limit for everyone"
            current={g ? `${admin.dollars(g.limit_micros)} ${PERIODS.find((p) => p.value === g.period)?.label}` : "none"}
            period={g?.period ?? "month"} amount={g ? String(g.limit_micros / 1e6) : ""}
            onSave={async (period, amount) => { await admin.setLimit({ scope: "global", period, limit_micros: micros(amount) }); spend.reload(); }}
            onRemove={g ? async () => { await admin.removeLimit("global"); spend.reload(); } : undefined}
          />
          <div class="admin-table-wrap">
            <table class="admin-table">
              <thead><tr><th>User</th><th>Spent</th><th>Limit</th><th>Period</th><th><span class="visually-hidden">Actions</span></th></tr></thead>
              <tbody>{spend.data.users.map((u) => <SpendRow key={u.user.id} row={u} reload={spend.reload} />)}</tbody>
            </table>
          </div>
        </>
      )}
    </AdminPage>
  );
}

function SpendRow({ row, reload }: { row: UserSpend; reload: () => void }) {
  const [open, setOpen] = useState(false);
  const name = row.user.username;
  const over = row.limit_micros !== null && row.spent_micros >= row.limit_micros;
  return (
    <>
      <tr>
        <td>{name}</td>
        <td class={"num" + (over ? " error" : "")}>{admin.dollars(row.spent_micros)}{over ? " (limit reached)" : ""}</td>
        <td class="num">
          {row.limit_micros === null ? <span class="muted">none</span> : admin.dollars(row.limit_micros)}
          {row.limit_scope === "global" && <span class="muted"> (everyone's)</span>}
          {row.limit_scope === "user" && <span class="muted"> (own)</span>}
        </td>
        <td>{row.period}, until {new Date(row.period_end).toLocaleDateString()}</td>
        <td><button type="button" class="small" aria-expanded={open} aria-label={`Limit for ${name}`} onClick={() => setOpen(!open)}>Limit</button></td>
      </tr>
      {open && (
        <tr>
          <td colSpan={5}>
            <LimitForm
              title={`Limit for ${name}`}
              current={row.limit_scope === "user" ? `${admin.dollars(row.limit_micros)} per ${row.period}` : "none of their own"}
              period={row.limit_scope === "user" ? row.period : "month"}
              amount={row.limit_scope === "user" && row.limit_micros !== null ? String(row.limit_micros / 1e6) : ""}
              onSave={async (period, amount) => { await admin.setLimit({ scope: "user", user_id: row.user.id, period, limit_micros: micros(amount) }); reload(); }}
              onRemove={row.limit_scope === "user" ? async () => { await admin.removeLimit("user", row.user.id); reload(); } : undefined}
            />
          </td>
        </tr>
      )}
    </>
  );
}

function LimitForm({ title, current, period, amount, onSave, onRemove }: {
  title: string; current: string; period: Period; amount: string;
  onSave: (period: Period, amount: string) => Promise<void>; onRemove?: () => Promise<void>;
}) {
  const [p, setP] = useState<Period>(period);
  const [a, setA] = useState(amount);
  const [done, setDone] = useState<string | null>(null);
  const act = useAction();
  return (
    <form class="admin-form" aria-label={title} onSubmit={(e) => { e.preventDefault(); void act.run(async () => { await onSave(p, a); setDone("Saved."); }); }}>
      <h2>{title}</h2>
      <p class="muted">Now: {current}.</p>
      <div class="admin-grid">
        <TextField label={`${title}, in dollars`} type="number" value={a} onInput={setA} required />
        <Select label={`${title}, period`} value={p} onChange={setP} options={PERIODS} />
      </div>
      <div class="admin-actions">
        <button type="submit" disabled={act.busy}>Save {title.toLowerCase()}</button>
        {onRemove && <button type="button" class="danger" disabled={act.busy} onClick={() => act.run(async () => { await onRemove(); setDone("Removed."); })}>Remove {title.toLowerCase()}</button>}
      </div>
      {done && <Status>{done}</Status>}
      {act.error && <Alert>{act.error}</Alert>}
    </form>
  );
}
