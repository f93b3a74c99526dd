#!/usr/bin/env python3
"""A fake central stack for testing deploy/verify.sh and deploy/bench-compare.sh without a cluster: the query APIs of Mimir
(/prometheus/api/v1/query), Loki (/loki/api/v1/query), Tempo (/api/search) and Grafana
(/api/datasources/uid/UID), in the shapes the real ones answer. It answers with data only to
queries for the tenant's own cluster (X-Scope-OrgID remote0N -> the scenario's cluster label),
and records every PromQL query to QUERY_LOG (one per line) so the caller can check their syntax.

    fake-central.py PORT_FILE QUERY_LOG [--missing mimir|loki|stream|events|tempo|grafana]... [--otel-demo]

Values: CPU queries 0.05 cores (per pod 0.02 and 0.03), memory 50 MiB (20 and 30 MiB), Mimir's
per-tenant ingestion rate (/api/v1/user_stats) 2000 samples/s, log lines and bytes 42, other
queries 7. With --otel-demo, scenario 3 reports OpenTelemetry Demo containers.

Prints nothing; writes the port it listens on (127.0.0.1) to PORT_FILE. Runs until killed.
"""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

CLUSTERS = {"remote01": "lgtm-remote", "remote02": "lgtm-remote-alloy", "remote03": "lgtm-remote-otel", "remote04": "lgtm-remote-agent"}
port_file, query_log = sys.argv[1], sys.argv[2]
missing = {a for i, a in enumerate(sys.argv) if i > 0 and sys.argv[i - 1] == "--missing"}
# The log queries of bench-compare.sh select by cluster only.


def vector(n, per_pod=None):
    if per_pod:
        result = [{"metric": {"pod": p}, "value": [1767225600, str(v)]} for p, v in per_pod]
    else:
        result = [{"metric": {}, "value": [1767225600, str(n)]}] if n else []
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


def mimir_answer(query, cluster):
    if 'namespace="otel-demo"' in query:
        return vector(3 if "--otel-demo" in sys.argv and cluster == "lgtm-remote-otel" else 0)
    pods = [(f"{cluster}/pod-a", 0), (f"{cluster}/pod-b", 0)]
    if "container_cpu_usage_seconds_total" in query and "rate(" in query:
        return vector(0.05, [(pods[0][0], 0.02), (pods[1][0], 0.03)] if "by (pod)" in query else None)
    if "container_memory_working_set_bytes" in query and "_over_time" in query:
        return vector(52428800, [(pods[0][0], 20971520), (pods[1][0], 31457280)] if "by (pod)" in query else None)
    return vector(7)


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, body, status=200):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urlparse(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        tenant = self.headers.get("X-Scope-OrgID", "")
        cluster = CLUSTERS.get(tenant)
        own = cluster is not None and f'"{cluster}"' in (q.get("query") or q.get("q") or "")
        if url.path == "/prometheus/api/v1/query":
            with open(query_log, "a") as f:
                f.write(q["query"] + "\n")
            return self.answer(mimir_answer(q["query"], cluster) if own and "mimir" not in missing else vector(0))
        if url.path == "/api/v1/user_stats":
            return self.answer({"numSeries": 9000, "ingestionRate": 2000 if cluster else 0})
        if url.path == "/loki/api/v1/query":
            query = q["query"]
            ok = own and "loki" not in missing
            if 'stream="stderr"' in query and "stream" in missing:
                ok = False
            if "eventhandler" in query and "events" in missing:
                ok = False
            return self.answer(vector(42 if ok else 0))
        if url.path == "/api/search":
            # Only TNS's real service names match (the PoC's "tns-app" finds nothing).
            found = "tempo" not in missing and tenant in CLUSTERS and q.get("q", "") in ('{ resource.service.name =~ "app|db|lb" }', "{}")
            return self.answer({"traces": [{"traceID": "4bf92f3577b34da6a3ce929d0e0e4736"}] if found else []})
        if url.path.startswith("/api/datasources/uid/"):
            uid = url.path.rsplit("/", 1)[1]
            if "grafana" in missing:
                return self.answer({"message": "data source not found"}, 404)
            return self.answer({"uid": uid, "name": uid})
        self.answer({"error": "not found"}, 404)


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(port_file, "w") as f:
    f.write(str(server.server_address[1]))
server.serve_forever()
