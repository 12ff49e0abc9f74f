import { describe, expect, it } from "vitest";
import { baseUrlHint, needsBaseUrl } from "../src/api/admin";
import type { ModelConfig } from "../src/api/types";
import { modelLabel } from "../src/chat/Pickers";
import { queueBadges, statusLabel } from "../src/chat/StatusBadge";

describe("the status badge", () => {
  it("says a chat that stopped for its person waits for them, not the API's requires_action", () => {
    expect(statusLabel("requires_action", ["tool_approval"])).toBe("waiting for you");
    expect(statusLabel("requires_action", ["elicitation", "client_tool"])).toBe("waiting for you");
    expect(statusLabel("requires_action", [])).toBe("waiting for you");
  });

  it("says a chat that only waits for its client's tool waits for the client", () => {
    expect(statusLabel("requires_action", ["client_tool", "client_tool"])).toBe("waiting for the client");
  });

  it("reads a running call's form as waiting for the person, and idle as idle", () => {
    expect(statusLabel("running", ["elicitation"])).toBe("waiting for you");
    expect(statusLabel("running")).toBe("running");
    expect(statusLabel("waiting")).toBe("idle");
  });
});

describe("the chat list's queue badges", () => {
  it("tell steering messages from queued ones (queued_count counts both)", () => {
    expect(queueBadges({ queued_count: 1, steering_count: 1 })).toEqual(["1 steering"]);
    expect(queueBadges({ queued_count: 3, steering_count: 1 })).toEqual(["2 queued", "1 steering"]);
    expect(queueBadges({ queued_count: 2, steering_count: 0 })).toEqual(["2 queued"]);
    expect(queueBadges({ queued_count: 0, steering_count: 0 })).toEqual([]);
  });

  it("degrade to the queue length from a server without steering_count", () => {
    expect(queueBadges({ queued_count: 2 })).toEqual(["2 queued"]);
    expect(queueBadges({})).toEqual([]);
  });
});

describe("the model picker", () => {
  const model = (over: Partial<ModelConfig>): ModelConfig => ({
    id: "m", provider_id: "p", provider: "openai-compatible", provider_name: "vllm", provider_display_name: "vLLM on gpu1",
    model: "llama3", display_name: "Llama", context_limit: 8192, compression_threshold: 80, is_default: false, enabled: true,
    options: {}, pricing: {}, created_at: "", updated_at: "", ...over,
  });

  it("names the provider by its display name when there are several", () => {
    expect(modelLabel(model({}), true)).toBe("Llama · vLLM on gpu1");
    expect(modelLabel(model({ is_default: true }), true)).toBe("Llama · vLLM on gpu1 (default)");
    expect(modelLabel(model({ provider_display_name: undefined }), true)).toBe("Llama · vllm");
    expect(modelLabel(model({}), false)).toBe("Llama");
  });
});

describe("the provider form's base URL", () => {
  it("is marked required exactly when the server needs it, and its hint says the same", () => {
    expect(needsBaseUrl("openai-compatible")).toBe(true);
    expect(baseUrlHint("openai-compatible")).not.toMatch(/empty/i);
    for (const kind of ["openai", "anthropic", "google"] as const) {
      expect(needsBaseUrl(kind)).toBe(false);
      expect(baseUrlHint(kind)).toMatch(/^Empty uses/);
    }
  });
});
