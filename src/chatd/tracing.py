"""OpenTelemetry traces of chat turns: off unless an OTLP endpoint is set (docs/operations.md#traces).

A leaf module, like `metrics` and `logs`: the layers that do the work open spans where it happens.
One trace per turn: model calls (GenAI semantic conventions), tool calls, persistence and
compaction are its spans. chatd's spans go through its own `TracerProvider`, never the global
one, so libraries that trace through the global API (the MCP SDK, a provider SDK) add nothing to
a turn's trace: their spans would depend on which task happens to own a connection. Prompts,
answers and tool arguments and results stay out of spans unless `capture_content` is on.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import NoOpTracer, Span, SpanKind, Status, StatusCode, Tracer

_SCOPE = "chatd"
# Larger values (a prompt with its history, a big tool result) are cut: backends refuse or drop
# attributes of several megabytes, and a trace is for finding a problem, not archiving a chat.
MAX_CONTENT_CHARS = 16_000

class _State:
    tracer: Tracer = NoOpTracer()
    provider: Any = None  # opentelemetry.sdk.trace.TracerProvider when tracing is on
    capture_content: bool = False


_state = _State()

# What a span attribute holder is before a span exists (records nothing).
NO_SPAN: Span = trace.INVALID_SPAN


def configure(endpoint: str, *, replica_id: object, sample_ratio: float = 1.0, capture_content: bool = False) -> None:
    """Export spans to the OTLP/HTTP collector at `endpoint` (its base URL, e.g. http://otel:4318;
    `/v1/traces` is added unless the URL has a path). An empty endpoint leaves tracing off.
    Headers, certificates and compression come from the standard `OTEL_EXPORTER_OTLP_*`
    variables, which the exporter reads itself."""
    if not endpoint:
        return
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"CHATD_OTEL_ENDPOINT must be an http(s) URL, got {endpoint!r}")
    url = endpoint if parts.path.strip("/") else endpoint.rstrip("/") + "/v1/traces"
    provider = new_provider(replica_id=replica_id, sample_ratio=sample_ratio)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
    install(provider, capture_content=capture_content)


def new_provider(*, replica_id: object, sample_ratio: float = 1.0) -> Any:
    """An SDK tracer provider naming this service and replica (tests add their own processor)."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    from chatd import __version__

    resource = Resource.create(
        {"service.name": "chatd", "service.version": __version__, "service.instance.id": str(replica_id)}
    )
    return TracerProvider(resource=resource, sampler=ParentBased(TraceIdRatioBased(sample_ratio)))


def install(provider: Any, *, capture_content: bool = False) -> None:
    """Use `provider` for chatd's spans from now on (None: tracing off)."""
    _state.provider = provider
    _state.tracer = provider.get_tracer(_SCOPE) if provider is not None else NoOpTracer()
    _state.capture_content = capture_content


def shutdown() -> None:
    """Export what is buffered and stop (at the end of `chatd serve`)."""
    provider, _state.provider = _state.provider, None
    install(None)
    if provider is not None:
        provider.shutdown()


def enabled() -> bool:
    return _state.provider is not None


def capture_content() -> bool:
    return _state.capture_content


def current_trace_id() -> str | None:
    """The trace id (32 hex digits) of the span current in this task, if one is being recorded."""
    ctx = trace.get_current_span().get_span_context()
    # Not sampled (CHATD_OTEL_SAMPLE_RATIO below 1): no trace will exist under this id.
    return trace.format_trace_id(ctx.trace_id) if ctx.is_valid and ctx.trace_flags.sampled else None


@contextlib.contextmanager
def span(name: str, attributes: dict[str, Any] | None = None, *, kind: SpanKind = SpanKind.INTERNAL, root: bool = False) -> Iterator[Span]:
    """A span, current inside the block (and in tasks started inside); an exception marks it
    failed with `error.type`. `root` starts a new trace whatever is current."""
    ctx = otel_context.Context() if root else None
    with _state.tracer.start_as_current_span(
        name, context=ctx, kind=kind, attributes=attributes, record_exception=True, set_status_on_exception=False
    ) as current:
        try:
            yield current
        except BaseException as exc:
            if current.is_recording():
                # A cancellation is how an interrupt or a shutdown reaches the turn: not an error.
                if not isinstance(exc, GeneratorExit) and type(exc).__name__ != "CancelledError":
                    # A class set inside the block (a provider error's kind) says more than the type.
                    if "error.type" not in (getattr(current, "attributes", None) or {}):
                        fail(current, type(exc).__name__, str(exc))
                else:
                    current.set_attribute("chatd.cancelled", True)
            raise


def fail(current: Span, error_type: str, description: str | None = None) -> None:
    if current.is_recording():
        current.set_attribute("error.type", error_type)
        current.set_status(Status(StatusCode.ERROR, (description or error_type)[:500]))


def content(value: Any) -> str:
    """`value` as the JSON a span attribute carries, cut to MAX_CONTENT_CHARS."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= MAX_CONTENT_CHARS else text[:MAX_CONTENT_CHARS] + "…"


# --- GenAI semantic conventions ---------------------------------------------------------------


def model_call_attributes(provider_kind: str, model: str, *, conversation_id: object, provider_name: str | None = None) -> dict[str, Any]:
    """`provider_name` is the GenAI name of the provider (`providers.registry`; default the kind)."""
    provider = provider_name or provider_kind
    return {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider,
        # The older name, still what many backends group by.
        "gen_ai.system": provider,
        "gen_ai.request.model": model,
        "gen_ai.conversation.id": str(conversation_id),
        "chatd.provider.kind": provider_kind,
    }


def record_response(
    current: Span, *, response_model: str | None, response_id: str | None, finish_reason: str | None,
    input_tokens: int, output_tokens: int,
) -> None:
    if not current.is_recording():
        return
    if response_model:
        current.set_attribute("gen_ai.response.model", response_model)
    if response_id:
        current.set_attribute("gen_ai.response.id", response_id)
    if finish_reason:
        current.set_attribute("gen_ai.response.finish_reasons", [finish_reason])
    current.set_attribute("gen_ai.usage.input_tokens", input_tokens)
    current.set_attribute("gen_ai.usage.output_tokens", output_tokens)


def tool_attributes(tool_name: str, call_id: str, *, mcp_server: str | None, mcp_tool: str | None) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": tool_name,
        "gen_ai.tool.call.id": call_id,
        "gen_ai.tool.type": "extension" if mcp_server else "function",
        "chatd.tool.source": "mcp" if mcp_server else "builtin",
    }
    if mcp_server:
        attrs["chatd.mcp.server"] = mcp_server
        attrs["mcp.method.name"] = "tools/call"
        if mcp_tool:
            attrs["chatd.mcp.tool"] = mcp_tool
    return attrs


def set_content(current: Span, key: str, value: Any) -> None:
    """Put prompt, answer or tool data on `current` only when an admin turned capture on."""
    if _state.capture_content and current.is_recording():
        current.set_attribute(key, content(value))


def set_attributes(current: Span, attributes: dict[str, Any]) -> None:
    if current.is_recording():
        current.set_attributes({k: v for k, v in attributes.items() if v is not None})


__all__: Sequence[str] = [
    "MAX_CONTENT_CHARS", "NO_SPAN", "Span", "SpanKind", "capture_content", "configure", "content", "current_trace_id", "enabled", "fail",
    "install", "model_call_attributes", "new_provider", "record_response", "set_attributes", "set_content",
    "shutdown", "span", "tool_attributes",
]
