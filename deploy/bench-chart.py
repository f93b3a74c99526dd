#!/usr/bin/env python3
"""Draws bench-compare.sh's results as one SVG a person reads at a glance: per scenario, a bar
for average CPU (with the peak as a tick), for average memory (with the peak), and for the CPU
cost per unit of work; below, average CPU and memory per agent pod. Standard library only.

    bench-chart.py results.tsv pods.tsv comparison.svg "last 30m"
"""
import csv
import sys
from xml.sax.saxutils import escape

COLORS = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#76b7b2"]
WIDTH, LABEL_W, BAR_H, GAP = 900, 260, 18, 6


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def panel(y, title, unit, rows, out):
    """rows: (label, value, peak or None, color, note). Returns the next free y."""
    out.append(f'<text x="10" y="{y + 14}" font-size="14" font-weight="bold">{escape(title)}</text>')
    y += 24
    values = [v for _, v, p, _, _ in rows for v in (v, p) if v is not None]
    top = max(values) if values else 0
    scale = (WIDTH - LABEL_W - 120) / top if top > 0 else 0
    for label, value, peak, color, note in rows:
        out.append(f'<text x="{LABEL_W - 8}" y="{y + BAR_H - 5}" font-size="12" text-anchor="end">{escape(label)}</text>')
        if value is None:
            out.append(f'<text x="{LABEL_W}" y="{y + BAR_H - 5}" font-size="12" fill="#888">n/a</text>')
        else:
            w = max(value * scale, 1)
            out.append(f'<rect class="bar" x="{LABEL_W}" y="{y}" width="{w:.1f}" height="{BAR_H}" fill="{color}"/>')
            text = f"{value:g} {unit}" + (f" (peak {peak:g})" if peak is not None else "") + (f" {note}" if note else "")
            if peak is not None:
                px = LABEL_W + peak * scale
                out.append(f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{y - 2}" y2="{y + BAR_H + 2}" stroke="#333" stroke-width="2"/>')
                w = max(w, peak * scale)
            out.append(f'<text x="{LABEL_W + w + 6:.1f}" y="{y + BAR_H - 5}" font-size="12">{escape(text)}</text>')
        y += BAR_H + GAP
    return y + 14


def main():
    results_path, pods_path, svg_path = sys.argv[1:4]
    window = sys.argv[4] if len(sys.argv) > 4 else ""
    results = list(csv.DictReader(open(results_path), delimiter="\t"))
    pods = list(csv.DictReader(open(pods_path), delimiter="\t"))
    color = {r["scenario"]: COLORS[i % len(COLORS)] for i, r in enumerate(results)}
    note = {r["scenario"]: "" if r["comparable"] == "yes" else f"[{r['comparable']}]" for r in results}
    body = []
    y = 10
    body.append(f'<text x="10" y="{y + 16}" font-size="18" font-weight="bold">Agents per scenario, {escape(window)} (same workload: TNS, 30s intervals)</text>')
    y += 36
    y = panel(y, "CPU, millicores (average; tick: peak)", "m",
              [(r["scenario"], num(r["cpu_avg_mcores"]), num(r["cpu_max_mcores"]), color[r["scenario"]], note[r["scenario"]]) for r in results], body)
    y = panel(y, "Memory working set, MiB (average; tick: peak)", "MiB",
              [(r["scenario"], num(r["mem_avg_mib"]), num(r["mem_max_mib"]), color[r["scenario"]], "") for r in results], body)
    y = panel(y, "Work delivered: samples/s + log lines/s (central stack, per tenant)", "items/s",
              [(r["scenario"], (num(r["samples_per_s"]) or 0) + (num(r["log_lines_per_s"]) or 0), None, color[r["scenario"]], "") for r in results], body)
    y = panel(y, "Cost: CPU millicores per 1000 items/s (lower is better)", "m",
              [(r["scenario"], num(r["mcores_per_1k_items_per_s"]), None, color[r["scenario"]], "") for r in results], body)
    y = panel(y, "CPU per agent pod, millicores (average)", "m",
              [(f"{p['pod']}", num(p["cpu_avg_mcores"]), None, color.get(p["scenario"], "#999"), "") for p in pods], body)
    y = panel(y, "Memory per agent pod, MiB (average; tick: peak)", "MiB",
              [(f"{p['pod']}", num(p["mem_avg_mib"]), num(p["mem_max_mib"]), color.get(p["scenario"], "#999"), "") for p in pods], body)
    legend_x = 10
    for s, c in color.items():
        body.append(f'<rect x="{legend_x}" y="{y}" width="12" height="12" fill="{c}"/>')
        body.append(f'<text x="{legend_x + 16}" y="{y + 11}" font-size="12">{escape(s)}</text>')
        legend_x += 16 + 8 * len(s) + 20
    y += 24
    with open(svg_path, "w") as f:
        f.write(f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{y}" font-family="sans-serif">\n')
        f.write(f'<rect width="{WIDTH}" height="{y}" fill="white"/>\n')
        f.write("\n".join(body))
        f.write("\n</svg>\n")


if __name__ == "__main__":
    main()
