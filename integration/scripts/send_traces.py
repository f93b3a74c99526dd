"""Sends known traces with the OpenTelemetry Python SDK over OTLP/gRPC and prints their ids.

Usage: send_traces.py ENDPOINT N_ERROR N_SLOW N_FAST
Prints one JSON object: {"error": [...], "slow": [...], "fast": [...]} of 32-hex trace ids.
Each trace has a root span and two children from a second service; error traces have an
ERROR child; slow traces last 80 ms, fast ones 5 ms (explicit times, no sleeping).
"""
import json
import sys
import time

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Status, StatusCode, set_span_in_context

endpoint, n_error, n_slow, n_fast = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])


def provider(service):
    p = TracerProvider(resource=Resource.create({"service.name": service}))
    p.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True)))
    return p


front, back = provider("frontend"), provider("backend")
tf, tb = front.get_tracer("it"), back.get_tracer("it")
ids = {"error": [], "slow": [], "fast": []}
now = time.time_ns()
kinds = ["error"] * n_error + ["slow"] * n_slow + ["fast"] * n_fast
for i, kind in enumerate(kinds):
    start = now - 10_000_000_000 + i * 1_000_000
    length = 80_000_000 if kind == "slow" else 5_000_000
    root = tf.start_span("GET /checkout", start_time=start)
    ctx = set_span_in_context(root)
    for j in range(2):
        child = tb.start_span(f"db-{j}", context=ctx, start_time=start + 1_000_000)
        if kind == "error" and j == 1:
            child.set_status(Status(StatusCode.ERROR, "boom"))
        child.end(end_time=start + 2_000_000)
    root.end(end_time=start + length)
    ids[kind].append(format(root.get_span_context().trace_id, "032x"))

front.shutdown()
back.shutdown()
print(json.dumps(ids))
