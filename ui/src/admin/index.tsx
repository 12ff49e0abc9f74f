// Admin pages (providers, models, MCP servers, users, limits, first-run setup) register here.
// Each entry becomes a route and, with `nav`, a link in the Admin section of the navigation
// (shown to admins only). A route at `/admin/setup` is opened automatically for an admin while
// no model is configured. See ui/README.md.

import type { RouteDef } from "../shell/router";
import { AdminHome } from "./AdminHome";

export const adminRoutes: RouteDef[] = [
  { path: "/admin", component: AdminHome, adminOnly: true, nav: { label: "Overview", section: "admin", order: 0 } },
];
