// ringkv's dashboard: polls this node's JSON API every POLL_MS and draws
// the ring, the nodes, the traffic chart, hints, movements, repairs and the
// anti-entropy state of each range. No framework, no build step: this file
// is served as is from the binary.
"use strict";

const POLL_MS = 2000;
// The node keeps 120 samples, one per 5 s: the chart's width.
const HISTORY_MAX = 120;
const COLOURS = ["#2f6fde", "#e08a1e", "#1f9d55", "#9b51e0", "#d64545", "#12a4b5",
                 "#8a6d3b", "#e0569b", "#5b6b7b", "#7cb342"];
let history = [];

const $ = (id) => document.getElementById(id);

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function svg(tag, attrs) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n.toFixed(1)) + " " + units[i];
}

function ago(ms) {
  if (ms < 1000) return "just now";
  const s = Math.round(ms / 1000);
  if (s < 120) return s + " s ago";
  const m = Math.round(s / 60);
  return m < 120 ? m + " min ago" : Math.round(m / 60) + " h ago";
}

async function getJson(path) {
  const r = await fetch(path, { credentials: "same-origin", cache: "no-store" });
  if (!r.ok) throw new Error(path + " answered " + r.status);
  return r.json();
}

function colourOf(ids, id) {
  return COLOURS[ids.indexOf(id) % COLOURS.length];
}

function drawRing(cluster) {
  const ring = $("ring");
  ring.replaceChildren();
  const nodes = cluster.nodes.filter((n) => n.ownership > 0);
  const ids = cluster.nodes.map((n) => n.id).sort();
  let start = -Math.PI / 2;
  const r = 80, cx = 100, cy = 100;
  for (const n of nodes) {
    const sweep = n.ownership * 2 * Math.PI;
    const end = start + sweep;
    const large = sweep > Math.PI ? 1 : 0;
    const x1 = cx + r * Math.cos(start), y1 = cy + r * Math.sin(start);
    const x2 = cx + r * Math.cos(end - 1e-4), y2 = cy + r * Math.sin(end - 1e-4);
    const path = svg("path", {
      d: `M ${x1} ${y1} A ${r} ${r} 0 ${large} 1 ${x2} ${y2}`,
      stroke: colourOf(ids, n.id), "stroke-width": 26, fill: "none",
      opacity: n.alive ? 1 : 0.35,
    });
    const title = svg("title");
    title.textContent = `${n.id}: ${(n.ownership * 100).toFixed(1)}%${n.alive ? "" : " (down)"}`;
    path.appendChild(title);
    ring.appendChild(path);
    start = end;
  }
  const label = svg("text", { x: 100, y: 105, "text-anchor": "middle", "font-size": 14 });
  label.textContent = `${cluster.nodes.length} nodes`;
  ring.appendChild(label);
  const rf = Object.entries(cluster.replication || {}).map(([dc, n]) => `${dc}: ${n} copies`);
  $("replication").textContent = rf.join(", ");
}

function drawNodes(cluster) {
  const body = $("nodes").querySelector("tbody");
  body.replaceChildren();
  const ids = cluster.nodes.map((n) => n.id).sort();
  for (const n of [...cluster.nodes].sort((a, b) => a.id.localeCompare(b.id))) {
    const tr = el("tr", { "data-node": n.id, class: n.alive ? "is-up" : "is-down" });
    const name = el("td");
    const dot = el("span", { style: `color:${colourOf(ids, n.id)}` }, "● ");
    name.append(dot, n.id + (n.id === cluster.self ? " (this node)" : ""));
    tr.append(
      name,
      el("td", {}, n.status),
      el("td", { class: n.alive ? "up" : "down" }, n.alive ? "up" : "down"),
      el("td", { class: "num" }, Number.isFinite(n.phi) ? n.phi.toFixed(1) : "∞"),
      el("td", {}, `${n.dc} / ${n.rack}`),
      el("td", { class: "num" }, (n.ownership * 100).toFixed(1) + "%"),
      el("td", { class: "num" }, n.load.ops_per_sec),
      el("td", { class: "num" }, n.load.p99_us),
      el("td", { class: "num" }, n.load.keys),
      el("td", { class: "num" }, bytes(n.load.disk_bytes)),
      el("td", {}, n.resp_addr),
      el("td", {}, n.http_addr),
    );
    body.appendChild(tr);
  }
}

function drawChart() {
  const chart = $("chart");
  chart.replaceChildren();
  if (history.length < 2) return;
  const W = 600, H = 200, pad = 6;
  const maxOps = Math.max(1, ...history.map((h) => h.ops));
  const maxP99 = Math.max(1, ...history.map((h) => h.p99));
  const x = (i) => pad + (i / (HISTORY_MAX - 1)) * (W - 2 * pad);
  const line = (key, max, colour) => {
    const offset = HISTORY_MAX - history.length;
    const pts = history.map((h, i) => `${x(i + offset)},${H - pad - (h[key] / max) * (H - 2 * pad)}`);
    chart.appendChild(svg("polyline", { points: pts.join(" "), fill: "none", stroke: colour, "stroke-width": 2 }));
  };
  line("ops", maxOps, "#2f6fde");
  line("p99", maxP99, "#e08a1e");
  const last = history[history.length - 1];
  $("chart-now").textContent = `now ${last.ops} ops/s, p99 ${last.p99} µs (max shown ${maxOps} ops/s, ${maxP99} µs)`;
}

function drawHints(cluster) {
  const box = $("hints");
  const pending = (cluster.hints && cluster.hints.pending) || [];
  if (pending.length === 0) {
    box.textContent = "none";
    box.className = "muted";
    return;
  }
  box.className = "";
  box.replaceChildren(...pending.map((h) =>
    el("div", {}, `for ${h.target}: ${h.count} hints, ${bytes(h.bytes)}`)));
}

function progress(done, total) {
  const wrap = el("div", { class: "bar" });
  const pct = total > 0 ? Math.min(100, (100 * done) / total) : 0;
  wrap.appendChild(el("div", { style: `width:${pct}%` }));
  return wrap;
}

function drawMovement(m) {
  const box = $("movement");
  if (!m || !m.kind) {
    box.textContent = "none running";
    box.className = "muted";
    return;
  }
  box.className = "";
  box.replaceChildren(
    el("div", {}, `${m.kind} of ${m.node}: ${m.phase}, ${m.ranges_done}/${m.ranges_total} ranges, ` +
      `${m.keys} keys, ${bytes(m.bytes)} at ${bytes(m.rate_bytes_per_sec)}/s`),
    progress(m.ranges_done, m.ranges_total),
  );
  if (m.last_error) box.appendChild(el("div", { class: "error" }, m.last_error));
}

function drawRepair(r) {
  const box = $("repair");
  box.className = "";
  const lines = [
    el("div", {}, `${r.ranges_in_sync} of ${r.ranges_replicated} ranges in sync with every replica`),
    el("div", { class: "muted" }, `least recently synced range: ${ago(r.oldest_unsynced_range_age_ms)}; ` +
      `${r.passes_completed} passes; ${r.keys_repaired} keys repaired; ${r.sync_failures} failed syncs`),
  ];
  if (r.running) {
    lines.push(el("div", {}, `repair running: ${r.ranges_done}/${r.ranges_total} ranges`));
    lines.push(progress(r.ranges_done, r.ranges_total));
  }
  box.replaceChildren(...lines);
}

function drawRanges(ranges) {
  const box = $("ranges");
  box.replaceChildren(...(ranges.ranges || []).map((r) => {
    const age = r.age_ms;
    const colour = age === null || age === undefined ? "#d64545"
      : age < 60000 ? "#1f9d55" : age < 3600000 ? "#e0b21e" : "#d64545";
    const cell = el("span", { style: `background:${colour}` });
    cell.title = `(${r.start}, ${r.end}]: ${age === null || age === undefined ? "never synced" : "synced " + ago(age)}`;
    return cell;
  }));
}

async function refresh() {
  try {
    const [cluster, status, repair, ranges, movement, recent] = await Promise.all([
      getJson("/v1/cluster"), getJson("/v1/status"), getJson("/v1/repair"),
      getJson("/v1/repair/ranges"), getJson("/v1/movement"), getJson("/v1/history"),
    ]);
    $("me").textContent = `node ${status.node_id} · ringkv ${status.version} · up ${Math.round(status.uptime_ms / 1000)} s`;
    $("updated").textContent = "updated " + new Date().toLocaleTimeString();
    history = recent.samples.slice(-HISTORY_MAX).map((s) => ({ ops: s.ops_per_sec, p99: s.p99_us }));
    drawRing(cluster);
    drawNodes(cluster);
    drawChart();
    drawHints(cluster);
    drawMovement(movement);
    drawRepair(repair);
    drawRanges(ranges);
    const members = cluster.nodes.filter((n) => n.status !== "LEFT");
    document.body.dataset.nodesUp = members.filter((n) => n.alive).length;
    document.body.dataset.nodesDown = members.filter((n) => !n.alive).length;
    $("error").hidden = true;
  } catch (e) {
    $("error").hidden = false;
    $("error").textContent = "cannot reach this node: " + e.message;
  }
}

refresh();
setInterval(refresh, POLL_MS);
