// Every page of the UI. Admin pages come from admin/index.tsx (owned by the admin pages).

import { adminRoutes } from "./admin";
import { ChatPage } from "./chat/ChatPage";
import { NewChatPage } from "./chat/NewChatPage";
import type { RouteDef } from "./shell/router";

export const routes: RouteDef[] = [
  { path: "/", component: NewChatPage },
  { path: "/chats/:id", component: ChatPage },
  ...adminRoutes,
];
