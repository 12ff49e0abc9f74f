// Admin pages (providers, models, MCP servers, users, limits, first-run setup) register here.
// Each entry becomes a route and, with `nav`, a link in the Admin section of the navigation
// (shown to admins only). A route at `/admin/setup` is opened automatically for an admin while
// no model is configured. See ui/README.md.

import type { RouteDef } from "../shell/router";
import { AdminHome } from "./AdminHome";
import { McpServers } from "./McpServers";
import { Models } from "./Models";
import { Providers } from "./Providers";
import { Setup } from "./Setup";
import { Templates } from "./Templates";
import { Usage } from "./Usage";
import { Users } from "./Users";

export const adminRoutes: RouteDef[] = [
  { path: "/admin", component: AdminHome, adminOnly: true, nav: { label: "Overview", section: "admin", order: 0 } },
  { path: "/admin/setup", component: Setup, adminOnly: true, nav: { label: "Setup", section: "admin", order: 5 } },
  { path: "/admin/providers", component: Providers, adminOnly: true, nav: { label: "Providers", section: "admin", order: 10 } },
  { path: "/admin/models", component: Models, adminOnly: true, nav: { label: "Models", section: "admin", order: 20 } },
  { path: "/admin/mcp", component: McpServers, adminOnly: true, nav: { label: "MCP servers", section: "admin", order: 30 } },
  { path: "/admin/templates", component: Templates, adminOnly: true, nav: { label: "Templates", section: "admin", order: 40 } },
  { path: "/admin/users", component: Users, adminOnly: true, nav: { label: "Users and tokens", section: "admin", order: 50 } },
  { path: "/admin/usage", component: Usage, adminOnly: true, nav: { label: "Usage and limits", section: "admin", order: 60 } },
];
