// The start page: pick a model and tools, write the first message; the chat is created with it.

import { useEffect, useState } from "preact/hooks";
import * as api from "../api/chats";
import type { BusyBehavior, InputPart } from "../api/types";
import { navigate } from "../shell/router";
import { useSession } from "../shell/session";
import { chatCache } from "./chats";
import { Composer } from "./Composer";
import { defaultModel, defaultServers, useConfig } from "./config";
import { ModelPicker, ServerPicker } from "./Pickers";

export function NewChatPage() {
  const { user } = useSession();
  const config = useConfig();
  const [modelId, setModelId] = useState<string | null>(null);
  const [servers, setServers] = useState<string[] | null>(null);
  useEffect(() => {
    if (config.loaded) {
      setModelId((m) => m ?? defaultModel(config.models));
      setServers((s) => s ?? defaultServers(config.servers));
    }
  }, [config.loaded]);

  const unconfigured = config.loaded && !config.error && config.models.length === 0;
  const send = async (content: InputPart[], _behavior: BusyBehavior) => {
    const chat = await api.createChat({ content, model_config_id: modelId, mcp_server_ids: servers });
    chatCache.put(chat);
    navigate(`/chats/${chat.id}`);
  };
  return (
    <div class="chat new-chat-page">
      <header class="chat-header">
        <div class="chat-heading"><h1>New chat</h1></div>
        <div class="chat-tools">
          <ModelPicker models={config.models} value={modelId} onChange={setModelId} />
          <ServerPicker servers={config.servers} value={servers ?? []} onChange={setServers} />
        </div>
      </header>
      <div class="empty">
        {config.error && <p class="error" role="alert">{config.error}</p>}
        {unconfigured && (
          <div class="notice notice-warning" role="alert">
            {user.role === "admin" ? (
              <p>No model is configured yet. <a href="#/admin">Set up a provider and a model</a> to start chatting.</p>
            ) : (
              <p>No model is configured on this server yet. Ask an admin to add a provider and a model.</p>
            )}
          </div>
        )}
        {!unconfigured && <p class="muted">What can I help with?</p>}
      </div>
      <Composer busy={false} disabled={unconfigured} disabledReason="No model is configured yet." onSend={send} />
    </div>
  );
}
