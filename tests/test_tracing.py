"""The OTLP endpoint setting: spans reach a collector over OTLP/HTTP (protobuf), named after the
service and replica; a malformed endpoint is refused at start; an empty one leaves tracing off."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from chatd import tracing


class Collector(HTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[tuple[str, str, bytes]] = []
        self.received = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: Collector

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.requests.append((self.path, self.headers["Content-Type"], body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()
        self.server.received.set()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[Collector]:
    server = Collector()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        tracing.shutdown()
        server.shutdown()
        server.server_close()


def test_spans_are_exported_to_the_configured_otlp_endpoint(collector: Collector) -> None:
    tracing.configure(collector.url, replica_id="replica-7")
    assert tracing.enabled() and not tracing.capture_content()
    with tracing.span("invoke_agent chatd", {"chatd.chat.id": "c1"}, root=True), tracing.span("chat m", {"gen_ai.request.model": "m"}):
        pass
    tracing.shutdown()  # flushes the batch
    assert collector.received.wait(10)
    path, content_type, body = collector.requests[0]
    assert (path, content_type) == ("/v1/traces", "application/x-protobuf")
    request = ExportTraceServiceRequest.FromString(body)
    [resource_spans] = request.resource_spans
    resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
    assert (resource["service.name"], resource["service.instance.id"]) == ("chatd", "replica-7")
    names = sorted(s.name for scope in resource_spans.scope_spans for s in scope.spans)
    assert names == ["chat m", "invoke_agent chatd"]
    assert not tracing.enabled()


def test_an_endpoint_with_a_path_is_used_as_it_is(collector: Collector) -> None:
    tracing.configure(collector.url + "/custom/traces", replica_id="r")
    with tracing.span("one", root=True):
        pass
    tracing.shutdown()
    assert collector.received.wait(10)
    assert collector.requests[0][0] == "/custom/traces"


def test_an_empty_endpoint_leaves_tracing_off_and_a_bad_one_is_refused() -> None:
    tracing.configure("", replica_id="r")
    assert not tracing.enabled()
    with tracing.span("nothing", root=True) as span:
        assert not span.is_recording()
        assert tracing.current_trace_id() is None
    for bad in ("collector:4318", "ftp://collector", "http://"):
        with pytest.raises(ValueError):
            tracing.configure(bad, replica_id="r")
    assert not tracing.enabled()


def test_sampling_keeps_or_drops_whole_turns() -> None:
    provider = tracing.new_provider(replica_id="r", sample_ratio=0.0)
    tracing.install(provider)
    try:
        with tracing.span("turn", root=True) as turn, tracing.span("child") as child:
            assert not turn.is_recording() and not child.is_recording()
            # An unsampled turn has no trace to point to: nothing is recorded on the chat or the logs.
            assert tracing.current_trace_id() is None
    finally:
        tracing.install(None)
