// Model configs and MCP servers, loaded once per page view and shared by the pickers.

import { useEffect, useState } from "preact/hooks";
import { describe } from "../api/client";
import { listMcpServers, listModelConfigs } from "../api/chats";
import type { McpServer, ModelConfig } from "../api/types";

export interface Config { models: ModelConfig[]; servers: McpServer[]; loaded: boolean; error: string | null }

export function useConfig(): Config {
  const [c, setC] = useState<Config>({ models: [], servers: [], loaded: false, error: null });
  useEffect(() => {
    Promise.all([listModelConfigs(), listMcpServers().catch(() => [] as McpServer[])])
      .then(([models, servers]) => setC({
        models: models.filter((m) => m.enabled),
        servers: servers.filter((s) => s.enabled),
        loaded: true,
        error: null,
      }))
      .catch((e) => setC({ models: [], servers: [], loaded: true, error: describe(e) }));
  }, []);
  return c;
}

export function defaultModel(models: ModelConfig[]): string | null {
  return (models.find((m) => m.is_default) ?? models[0])?.id ?? null;
}

/** The servers a new chat starts with: forced ones and those on by default. */
export function defaultServers(servers: McpServer[]): string[] {
  return servers.filter((s) => s.availability !== "default_off").map((s) => s.id);
}
