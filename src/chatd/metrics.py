"""Prometheus metrics of one replica (served at /metrics; docs/metrics.md lists them).

A leaf module: the layers that do the work update these where it happens. Gauges that are facts
of the database (chats by status, queue depth) are read when /metrics is scraped
(`observe_database`), not kept in step by every writer. Label values are bounded: provider kinds,
configured model names, MCP server slugs and error classes, never ids or user input."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# Model latencies span a fast local model's 50 ms to a reasoning model's minutes.
_MODEL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0, 300.0)
_FAST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

CHATS = Gauge("chatd_chats", "Chats by status (the whole database, read at scrape time).", ["status"])
QUEUE_DEPTH = Gauge("chatd_queue_depth", "Messages waiting in chat queues (the whole database, read at scrape time).")
TURNS_RUNNING = Gauge("chatd_turns_running", "Turns running on this replica.")
ACQUIRE_SECONDS = Histogram("chatd_acquire_seconds", "Duration of one acquire round (claiming pending chats).", buckets=_FAST_BUCKETS)
ACQUIRED = Counter("chatd_chats_acquired_total", "Chats acquired by this replica's workers.")

TIME_TO_FIRST_TOKEN = Histogram(
    "chatd_time_to_first_token_seconds",
    "From sending a model request to its first streamed event.",
    ["provider", "model"],
    buckets=_MODEL_BUCKETS,
)
STEP_SECONDS = Histogram(
    "chatd_step_duration_seconds",
    "One agent step: the model call and its tool calls, until persisted.",
    ["provider", "model"],
    buckets=_MODEL_BUCKETS,
)
TOKENS = Counter("chatd_tokens_total", "Tokens used, by model and kind (input, output, cache_read, cache_write, reasoning).", ["model", "kind"])
COST_MICROS = Counter("chatd_cost_micros_total", "Cost in millionths of the pricing currency, by model.", ["model"])
PROVIDER_ERRORS = Counter("chatd_provider_errors_total", "Failed model calls, by class (rate_limit, overloaded, auth, ...).", ["class"])
PROVIDER_RETRIES = Counter("chatd_provider_retries_total", "Model calls retried, by the class of the failure.", ["class"])

STREAM_SUBSCRIBERS = Gauge("chatd_stream_subscribers", "Chat stream subscribers (SSE and WebSocket) on this replica.")
STREAM_DROPPED = Counter("chatd_stream_dropped_parts_total", "Message parts not delivered to a slow subscriber (its queue was full).")
STREAM_RESYNCS = Counter("chatd_stream_resyncs_total", "Subscribers re-read from the database (queue full or pubsub reconnect).")
RELAY_CONNECTIONS = Gauge("chatd_relay_connections", "Part relays between replicas, by direction (in: following another replica, out: serving one).", ["direction"])

MCP_SESSIONS = Gauge("chatd_mcp_sessions_open", "MCP sessions open on this replica (pooled, leased or idle), by server slug.", ["server"])
MCP_CONNECTIONS_OPENED = Counter("chatd_mcp_connections_opened_total", "MCP connections (stdio processes, HTTP sessions) opened by the pool, by server slug.", ["server"])
MCP_CONNECTIONS_REUSED = Counter("chatd_mcp_connections_reused_total", "Turns served by an already open pooled MCP connection, by server slug.", ["server"])
MCP_CONNECT_FAILURES = Counter("chatd_mcp_connect_failures_total", "MCP servers skipped at connect, by server slug.", ["server"])
MCP_CALL_SECONDS = Histogram("chatd_mcp_call_seconds", "MCP tool call latency, by server slug.", ["server"], buckets=_MODEL_BUCKETS)

WORKSPACE_AGENTS = Gauge("chatd_workspace_agents_running", "Workspace agents this replica started and has not stopped.")

DB_POOL_IN_USE = Gauge("chatd_db_pool_in_use", "Database connections checked out of the pool (read at scrape time).")
DB_POOL_WAIT = Histogram(
    "chatd_db_pool_wait_seconds", "Time to get a database connection from the pool (a new connection included).", buckets=_FAST_BUCKETS
)
DB_POOL_SIZE = Gauge("chatd_db_pool_size", "Database connections held by the pool, idle or in use (read at scrape time).")


def count_tokens(model: str, input_tokens: int, output_tokens: int, cache_read: int, cache_write: int, reasoning: int) -> None:
    for kind, n in (("input", input_tokens), ("output", output_tokens), ("cache_read", cache_read), ("cache_write", cache_write), ("reasoning", reasoning)):
        if n > 0:
            TOKENS.labels(model, kind).inc(n)
