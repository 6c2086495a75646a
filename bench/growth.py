#!/usr/bin/env python3
"""Table and plot of `herald-bench scale` runs at growing sizes (bench/scale.sh).

    python3 bench/growth.py RESULTS.jsonl OUT.svg

RESULTS.jsonl holds one `scale` JSON report per line. Prints a markdown table of every size
and writes an SVG with one panel per figure against the socket count (standard library only).
"""
import json
import sys

PANELS = [
    ("connections/s (connect + subscribe)", [("connections_per_second", "connections/s")]),
    ("server RSS bytes per socket", [("rss_bytes_per_socket_idle", "idle"),
                                     ("rss_bytes_per_socket_under_traffic", "under traffic")]),
    ("deliveries/s", [("deliveries_per_second", "deliveries/s")]),
    ("publish → deliver latency, ms", [("latency_p50_ms", "p50"), ("latency_p99_ms", "p99"),
                                       ("latency_p999_ms", "p999")]),
    ("server CPU s per million deliveries", [("server_cpu_seconds_per_million_deliveries", "CPU s/M")]),
    ("share of one core while publishing", [("server_core_share", "servers (nodes + Redis)"),
                                            ("generator_core_share", "generator")]),
]
COLOURS = ["#1f77b4", "#d62728", "#2ca02c"]


def table(runs):
    head = ("| sockets | connect/s | RSS B/socket idle | under traffic | deliveries/s | "
            "p50 / p99 / p999 ms | lost | dup | CPU s/M | core: servers / generator |")
    rows = [head, "| " + " | ".join(["---"] * 10) + " |"]
    for r in runs:
        rows.append(
            f"| {r['sockets']:,} | {r['connections_per_second']:,.0f} | "
            f"{r.get('rss_bytes_per_socket_idle', 0):,.0f} | "
            f"{r.get('rss_bytes_per_socket_under_traffic', 0):,.0f} | "
            f"{r['deliveries_per_second']:,.0f} | "
            f"{r['latency_p50_ms']:.1f} / {r['latency_p99_ms']:.1f} / {r['latency_p999_ms']:.1f} | "
            f"{r['lost']:,} | {r['duplicated']:,} | "
            f"{r.get('server_cpu_seconds_per_million_deliveries', 0):.2f} | "
            f"{r.get('server_core_share', 0):.2f} / {r.get('generator_core_share', 0):.2f} |")
    return "\n".join(rows)


def panel(x0, y0, w, h, title, series, runs):
    xs = [r["sockets"] for r in runs]
    ys = [r.get(key, 0) for key, _ in series for r in runs]
    xmax = max(xs) * 1.05
    ymax = max(ys + [1]) * 1.15
    left, bottom = x0 + 60, y0 + h - 30
    pw, ph = w - 80, h - 60
    sx = lambda x: left + pw * x / xmax
    sy = lambda y: bottom - ph * y / ymax
    out = [f'<text x="{x0 + w / 2}" y="{y0 + 16}" text-anchor="middle" font-weight="bold">{title}</text>',
           f'<line x1="{left}" y1="{bottom}" x2="{left + pw}" y2="{bottom}" stroke="black"/>',
           f'<line x1="{left}" y1="{bottom}" x2="{left}" y2="{bottom - ph}" stroke="black"/>']
    for k in range(5):
        yv = ymax * k / 4
        label = f"{yv:,.0f}" if ymax >= 10 else f"{yv:.2f}"
        out.append(f'<text x="{left - 4}" y="{sy(yv) + 4}" text-anchor="end" font-size="10">{label}</text>')
        out.append(f'<line x1="{left}" y1="{sy(yv)}" x2="{left + pw}" y2="{sy(yv)}" stroke="#ddd"/>')
    for x in xs:
        out.append(f'<text x="{sx(x)}" y="{bottom + 14}" text-anchor="middle" font-size="10">{x // 1000}k</text>')
    for i, (key, label) in enumerate(series):
        pts = " ".join(f"{sx(r['sockets']):.1f},{sy(r.get(key, 0)):.1f}" for r in runs)
        c = COLOURS[i % len(COLOURS)]
        out.append(f'<polyline points="{pts}" fill="none" stroke="{c}" stroke-width="2"/>')
        for r in runs:
            out.append(f'<circle cx="{sx(r["sockets"]):.1f}" cy="{sy(r.get(key, 0)):.1f}" r="3" fill="{c}"/>')
        if len(series) > 1:
            out.append(f'<text x="{left + 8}" y="{bottom - ph + 12 + 13 * i}" fill="{c}" font-size="11">{label}</text>')
    out.append(f'<text x="{left + pw / 2}" y="{bottom + 27}" text-anchor="middle" font-size="10">sockets</text>')
    return out


def svg(runs):
    w, h, cols = 400, 240, 3
    rows = (len(PANELS) + cols - 1) // cols
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w * cols}" height="{h * rows}" '
             f'font-family="sans-serif" font-size="12">',
             f'<rect width="{w * cols}" height="{h * rows}" fill="white"/>']
    for i, (title, series) in enumerate(PANELS):
        parts += panel((i % cols) * w, (i // cols) * h, w, h, title, series, runs)
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main():
    results, out = sys.argv[1], sys.argv[2]
    runs = []
    for line in open(results):
        line = line.strip()
        if line.startswith("{"):
            r = json.loads(line)
            if r.get("scenario") == "scale":
                runs.append(r)
    if not runs:
        sys.exit("no scale reports in " + results)
    runs.sort(key=lambda r: r["sockets"])
    print(table(runs))
    with open(out, "w") as f:
        f.write(svg(runs))
    print(f"\nplot: {out}")


if __name__ == "__main__":
    main()
