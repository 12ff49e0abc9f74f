import { adminRoutes } from "./index";

/** The admin landing page: links to every registered admin page. */
export function AdminHome() {
  const pages = adminRoutes.filter((r) => r.nav && r.path !== "/admin");
  return (
    <section class="page" aria-labelledby="admin-h">
      <h1 id="admin-h">Administration</h1>
      {pages.length === 0 ? (
        <p>No admin pages yet.</p>
      ) : (
        <ul>
          {pages.map((r) => (
            <li key={r.path}><a href={"#" + r.path}>{r.nav!.label}</a></li>
          ))}
        </ul>
      )}
    </section>
  );
}
