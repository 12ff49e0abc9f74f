// Who is signed in, shared with every page through context.

import { createContext } from "preact";
import { useContext } from "preact/hooks";
import type { User } from "../api/types";

export interface Session {
  user: User;
  signOut: () => void;
}

export const SessionContext = createContext<Session | null>(null);

export function useSession(): Session {
  const s = useContext(SessionContext);
  if (!s) throw new Error("useSession outside a signed-in shell");
  return s;
}
