"""Sends a known trace with a real OpenTelemetry exporter and prints what was sent as JSON.

usage: send_spans.py jaeger-agent|jaeger-binary|jaeger-collector|zipkin HOST PORT

The trace: a SERVER root span `GET /albums` with typed attributes, a CLIENT child `SELECT albums`
with an event and an ERROR status with a description, and an INTERNAL grandchild. The resource
has service.name `tns-app` and a `deployment.environment` attribute.
"""
import json
import sys

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode == "jaeger-agent":
    from opentelemetry.exporter.jaeger.thrift import JaegerExporter
    exporter = JaegerExporter(agent_host_name=host, agent_port=port)
elif mode == "jaeger-collector":
    from opentelemetry.exporter.jaeger.thrift import JaegerExporter
    exporter = JaegerExporter(collector_endpoint=f"http://{host}:{port}/api/traces?format=jaeger.thrift")
elif mode == "zipkin":
    from opentelemetry.exporter.zipkin.json import ZipkinExporter
    exporter = ZipkinExporter(endpoint=f"http://{host}:{port}/api/v2/spans")
else:
    sys.exit(f"unknown mode {mode}")

provider = TracerProvider(resource=Resource.create({"service.name": "tns-app", "deployment.environment": "test"}))
memory = InMemorySpanExporter()
provider.add_span_processor(SimpleSpanProcessor(memory))
provider.add_span_processor(SimpleSpanProcessor(exporter))
tracer = provider.get_tracer("tns.app", "1.2.3")

with tracer.start_as_current_span("GET /albums", kind=SpanKind.SERVER) as root:
    root.set_attribute("http.method", "GET")
    root.set_attribute("http.status_code", 200)
    root.set_attribute("cache.hit", True)
    root.set_attribute("load", 0.25)
    with tracer.start_as_current_span("SELECT albums", kind=SpanKind.CLIENT) as db:
        db.set_attribute("db.system", "mysql")
        db.add_event("retry", {"attempt": 2})
        db.set_status(Status(StatusCode.ERROR, "connection reset"))
        with tracer.start_as_current_span("decode rows") as inner:
            inner.set_attribute("rows", 12)
provider.shutdown()

out = []
for s in memory.get_finished_spans():
    out.append({
        "trace_id": format(s.context.trace_id, "032x"),
        "span_id": format(s.context.span_id, "016x"),
        "parent_span_id": format(s.parent.span_id, "016x") if s.parent else "",
        "name": s.name,
        "kind": s.kind.name,
        "start": s.start_time,
        "end": s.end_time,
        "status": s.status.status_code.name,
        "status_description": s.status.description or "",
        "attributes": {k: v for k, v in s.attributes.items()},
        "events": [{"name": e.name, "time": e.timestamp} for e in s.events],
    })
print(json.dumps(out))
