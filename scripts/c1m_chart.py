#!/usr/bin/env python3
"""Charts for docs/c1m.md from the saved runs (no plotting library: plain SVG).

    scripts/c1m_chart.py   # reads docs/results/c1m/*.json, writes docs/results/c1m/*.svg

- c1m.svg: memory per connection (server and loadgen user space, kernel slab, peak socket
  buffers) and ping p99 against connections, one point per run of scripts/c1m.py; runs that
  failed are drawn hollow at the count they held.
- connect-cost.svg: connect() time against the connections already open on one (source,
  destination) pair, kernel-chosen ports against explicit pairs (scripts/connect_cost.py).
"""

import glob
import json
import math
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIR = os.path.join(ROOT, "docs", "results", "c1m")
COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd"]


def panel(x0, y0, w, h, title, xs, series, ylabel, ylog=False, xlabel="connections"):
    """One chart: series = [(name, [(x, y, filled)])]. Returns SVG elements."""
    out = [f'<text x="{x0 + w / 2}" y="{y0 - 12}" text-anchor="middle" '
           f'font-weight="bold">{title}</text>',
           f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#999"/>']
    ys = [p[1] for _, pts in series for p in pts if p[1] is not None and p[1] > 0]
    ymax = max(ys) * 1.15
    ymin = min(ys) / 2 if ylog else 0

    def fy(v):
        if ylog:
            return y0 + h - (math.log10(v) - math.log10(ymin)) / \
                (math.log10(ymax) - math.log10(ymin)) * h
        return y0 + h - (v - ymin) / (ymax - ymin) * h

    xmax = max(xs) * 1.08

    def fx(v):
        return x0 + v / xmax * w

    for x in xs:
        out.append(f'<line x1="{fx(x)}" y1="{y0 + h}" x2="{fx(x)}" y2="{y0 + h + 5}" stroke="#333"/>'
                   f'<text x="{fx(x)}" y="{y0 + h + 18}" text-anchor="middle" font-size="11">'
                   f'{x / 1000:.0f}K</text>')
    ticks = []
    if ylog:
        e = math.floor(math.log10(ymin))
        while 10 ** e <= ymax:
            if 10 ** e >= ymin:
                ticks.append(10 ** e)
            e += 1
    else:
        step = 10 ** math.floor(math.log10(ymax / 4))
        step *= 2 if ymax / step > 10 else 1
        ticks = [i * step for i in range(int(ymax / step) + 1)]
    for t in ticks:
        out.append(f'<line x1="{x0}" y1="{fy(t)}" x2="{x0 + w}" y2="{fy(t)}" stroke="#eee"/>'
                   f'<text x="{x0 - 6}" y="{fy(t) + 4}" text-anchor="end" font-size="11">'
                   f'{t:g}</text>')
    out.append(f'<text x="{x0 - 45}" y="{y0 + h / 2}" font-size="12" text-anchor="middle" '
               f'transform="rotate(-90 {x0 - 45} {y0 + h / 2})">{ylabel}</text>')
    out.append(f'<text x="{x0 + w / 2}" y="{y0 + h + 34}" text-anchor="middle" '
               f'font-size="12">{xlabel}</text>')
    for i, (name, pts) in enumerate(series):
        c = COLORS[i % len(COLORS)]
        pts = [p for p in pts if p[1] is not None and p[1] > 0]
        line = [p for p in pts if p[2]]
        if len(line) > 1:
            d = " ".join(f"{fx(x):.1f},{fy(y):.1f}" for x, y, _ in line)
            out.append(f'<polyline points="{d}" fill="none" stroke="{c}" stroke-width="2"/>')
        for x, y, filled in pts:
            out.append(f'<circle cx="{fx(x):.1f}" cy="{fy(y):.1f}" r="4" stroke="{c}" '
                       f'stroke-width="2" fill="{c if filled else "white"}"/>')
        out.append(f'<rect x="{x0 + 10}" y="{y0 + 10 + 16 * i}" width="10" height="10" '
                   f'fill="{c}"/><text x="{x0 + 26}" y="{y0 + 19 + 16 * i}" '
                   f'font-size="11">{name}</text>')
    return out


def svg(w, h, body):
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
            f'font-family="sans-serif" font-size="13">\n<rect width="{w}" height="{h}" '
            f'fill="white"/>\n' + "\n".join(body) + "\n</svg>\n")


def main():
    runs = []
    for f in sorted(glob.glob(os.path.join(DIR, "run-*.json"))):
        with open(f) as fh:
            d = json.load(fh)
        r = d["result"]
        peak = max(d["samples"], key=lambda s: s["conns_open"])
        r["_first"] = d["samples"][0]
        runs.append((r, peak))
    runs.sort(key=lambda rp: rp[0]["requested"])
    xs = sorted({r["requested"] for r, _ in runs if r["pass"]} | {1_000_000})

    def x_of(r, peak):
        return r["requested"] if r["pass"] else peak["conns_open"]

    def mem_pts(key, sample_key):
        """Passed runs: the script's figure. Failed runs: from the sample with the most
        connections open (growth since the first sample, over that count)."""
        out = []
        for r, peak in runs:
            if r["pass"]:
                out.append((r["requested"], r[key], True))
            elif sample_key:
                first = r["_first"]
                out.append((peak["conns_open"],
                            (peak[sample_key] - first[sample_key]) / peak["conns_open"], False))
        return out

    mem = [("kernel slab (both ends)", mem_pts("kernel_slab_bytes_per_conn", "slab")),
           ("socket buffers, peak", mem_pts("socket_buffer_bytes_per_conn_peak", None)),
           ("loadgen user", mem_pts("loadgen_user_bytes_per_conn", None)),
           ("server user", mem_pts("server_user_bytes_per_conn", "server_rss"))]
    ping = [(f"ping {q} (s)", [(x_of(r, peak), r["ping_latency_us"][q] / 1e6, r["pass"])
                               for r, peak in runs]) for q in ("p99", "p50")]
    body = panel(90, 50, 460, 300, "memory per connection (log scale)", xs, mem, "bytes",
                 ylog=True)
    body += panel(700, 50, 460, 300, "ping latency (log scale)", xs, ping, "seconds", ylog=True)
    body.append('<text x="90" y="415" font-size="11">filled: run passed (all held, no ping lost); '
                'hollow: failed run, drawn at the count it held. Shared 2-core machine: '
                'latencies are what it gave.</text>')
    with open(os.path.join(DIR, "c1m.svg"), "w") as f:
        f.write(svg(1220, 430, body))

    with open(os.path.join(DIR, "connect_cost.json")) as f:
        cc = json.load(f)
    series = []
    for mode, label in (("noport", "kernel-chosen port (IP_BIND_ADDRESS_NO_PORT), 1 pair"),
                        ("explicit", "explicit (address, port) pair")):
        if mode in cc:
            series.append((label + ", median",
                           [(row["occupancy_to"], row["median_us"], True)
                            for row in cc[mode]["rows"]]))
    xs = [row["occupancy_to"] for row in cc["noport"]["rows"]]
    body = panel(90, 50, 700, 320, "connect() time against connections already open",
                 xs, series, "µs (log scale)", ylog=True,
                 xlabel="connections open on the (source, destination) pair")
    with open(os.path.join(DIR, "connect-cost.svg"), "w") as f:
        f.write(svg(860, 430, body))


if __name__ == "__main__":
    main()
