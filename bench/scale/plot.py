#!/usr/bin/env python3
"""Draws docs/gossip-scale.svg from the rows `ringkv prove scale` prints.

Usage: ringkv prove scale --nodes 100,250,500,1000 | python3 bench/scale/plot.py > docs/gossip-scale.svg
(rows of several runs may be concatenated, each with its header)

Two panels against the cluster size: gossip bytes a node sends and receives
a second (mean and p99 over nodes; the whole-state exchange of the version
before, about 3 KB x N, is off the chart), and rounds for a token change to reach
every node with seconds for a dead rack to be seen down by all. No
dependencies beyond Python's standard library.
"""

import sys

rows = []
header = None
for line in sys.stdin:
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if cells and cells[0] == "nodes":
        # Columns by name: the table gains columns over time.
        header = {name: i for i, name in enumerate(cells)}
        continue
    if header is None or len(cells) < len(header) or not cells[0].replace(",", "").isdigit():
        continue
    num = lambda c: float(c.split()[0].replace(",", "")) if c.split() and c.split()[0] not in ("-", "not") else None
    col = lambda name: num(cells[header[name]]) if name in header else None
    rows.append(
        {
            "n": int(cells[0].replace(",", "")),
            "mean": col("bytes/node/s mean"),
            "p99": col("p99"),
            "token": col("token change rounds"),
            "detect": col("rack down (nodes) s"),
        }
    )
rows.sort(key=lambda r: r["n"])
if not rows:
    sys.exit("no rows on stdin")

W, H, PAD = 360, 260, 48
out = ['<svg xmlns="http://www.w3.org/2000/svg" width="780" height="300" font-family="sans-serif" font-size="11">']


def panel(x0, title, series, ymax, ylabel):
    out.append(f'<g transform="translate({x0},20)">')
    out.append(f'<text x="{W / 2}" y="0" text-anchor="middle" font-weight="bold">{title}</text>')
    nmax = max(r["n"] for r in rows)
    sx = lambda n: PAD + (W - PAD - 10) * n / nmax
    sy = lambda v: H - PAD + 10 - (H - PAD - 10) * v / ymax
    out.append(f'<line x1="{PAD}" y1="{sy(0)}" x2="{W - 10}" y2="{sy(0)}" stroke="black"/>')
    out.append(f'<line x1="{PAD}" y1="{sy(0)}" x2="{PAD}" y2="{sy(ymax)}" stroke="black"/>')
    for i in range(5):
        v = ymax * i / 4
        out.append(f'<text x="{PAD - 4}" y="{sy(v) + 4}" text-anchor="end">{v:g}</text>')
    for r in rows:
        out.append(f'<text x="{sx(r["n"])}" y="{sy(0) + 14}" text-anchor="middle">{r["n"]}</text>')
    out.append(f'<text x="{W / 2}" y="{sy(0) + 30}" text-anchor="middle">nodes</text>')
    out.append(f'<text x="12" y="{sy(ymax / 2)}" transform="rotate(-90 12 {sy(ymax / 2)})" text-anchor="middle">{ylabel}</text>')
    for k, (name, colour, values) in enumerate(series):
        pts = [(sx(n), sy(min(v, ymax))) for n, v in values if v is not None]
        out.append('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>' % (colour, " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)))
        for x, y in pts:
            out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>')
        out.append(f'<text x="{PAD + 8}" y="{sy(ymax) + 14 + 13 * k}" fill="{colour}">{name}</text>')
    out.append("</g>")


panel(
    10,
    "Gossip, KB a node a second",
    [
        ("digests, mean", "#1f77b4", [(r["n"], r["mean"] / 1024) for r in rows]),
        ("digests, p99", "#2ca02c", [(r["n"], r["p99"] / 1024) for r in rows]),
        ("target at 1,000: 64 KB", "#7f7f7f", [(rows[0]["n"], 64), (rows[-1]["n"], 64)]),
    ],
    100,
    "KB/s",
)
panel(
    410,
    "Convergence",
    [
        ("token change, rounds", "#1f77b4", [(r["n"], r["token"]) for r in rows]),
        ("rack seen down by all, s", "#ff7f0e", [(r["n"], r["detect"]) for r in rows]),
    ],
    40,
    "rounds / seconds",
)
out.append("</svg>")
print("\n".join(out))
