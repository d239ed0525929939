# ruff: noqa: E501  (the embedded page keeps its JavaScript lines whole)
"""The LLMOps dashboard: one self-contained page (inline CSS and JS, charts drawn as inline
SVG, no external requests). The page is public; its data calls carry the bearer token the
user types in (kept in sessionStorage) or passes as `?token=`."""

from __future__ import annotations

from typing import Final

DASHBOARD_HTML: Final = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>faas LLMOps</title>
<style>
body{font:14px system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{background:#1d2330;color:#fff;padding:10px 18px;display:flex;gap:12px;align-items:center}
header h1{font-size:17px;margin:0 12px 0 0}
input,select,button{font:inherit;padding:4px 8px}
main{padding:16px;display:grid;grid-template-columns:repeat(auto-fit,minmax(440px,1fr));gap:16px}
.card{background:#fff;border-radius:8px;padding:12px 14px;box-shadow:0 1px 3px #0002}
.card h2{font-size:14px;margin:0 0 8px}
#totals{display:flex;gap:24px;flex-wrap:wrap}
.kpi b{display:block;font-size:20px}
#status{margin-left:auto;font-size:12px;opacity:.8}
svg text{font-size:10px;fill:#555}
table{border-collapse:collapse;width:100%}td,th{padding:3px 6px;text-align:right}
td:first-child,th:first-child{text-align:left}
</style></head>
<body>
<header><h1>LLMOps</h1><a href="/llmops/traces" style="color:#9cf">traces</a>
<input id="token" type="password" placeholder="bearer token" size="28">
<select id="range"><option value="24">last 24 h</option><option value="168">last 7 days</option>
<option value="720">last 30 days</option></select>
<button id="load">Load</button><span id="status">enter a token</span></header>
<main>
<section class="card" style="grid-column:1/-1"><h2>Totals</h2><div id="totals"></div></section>
<section class="card"><h2>Cost (USD) over time</h2><div id="chart-cost"></div></section>
<section class="card"><h2>Tokens over time</h2><div id="chart-tokens"></div></section>
<section class="card"><h2>Latency p50 / p95 (ms) over time</h2><div id="chart-latency"></div></section>
<section class="card"><h2>Errors over time</h2><div id="chart-errors"></div></section>
<section class="card"><h2>Cost by model</h2><div id="chart-models"></div></section>
<section class="card"><h2>By model</h2><div id="table-models"></div></section>
<section class="card" style="grid-column:1/-1"><h2>Alerts</h2><div id="alerts">none</div></section>
<section class="card"><h2>Spend by <select id="usage-by"><option value="key">API key</option><option value="user">user</option>
<option value="team">team</option><option value="tag">tag</option></select></h2><div id="table-usage"></div></section>
</main>
<script>
"use strict";
const NS = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const stored = sessionStorage.getItem("faas-llmops-token");
$("token").value = params.get("token") || stored || "";

function el(name, attrs, text) {
  const node = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}
function fmt(v) {
  if (v === null || v === undefined) return "-";
  if (Math.abs(v) >= 1000) return v.toLocaleString("en-US", {maximumFractionDigits: 0});
  return String(Math.round(v * 10000) / 10000);
}
function lineChart(target, labels, series) {
  const W = 440, H = 190, L = 48, B = 24, T = 10;
  const svg = el("svg", {viewBox: `0 0 ${W} ${H}`, width: "100%", "data-chart": target});
  const max = Math.max(1e-9, ...series.flatMap((s) => s.values.map((v) => v || 0)));
  const x = (i) => L + (labels.length < 2 ? (W - L - 10) / 2 : (i * (W - L - 10)) / (labels.length - 1));
  const y = (v) => T + (H - T - B) * (1 - (v || 0) / max);
  svg.appendChild(el("line", {x1: L, y1: H - B, x2: W - 10, y2: H - B, stroke: "#999"}));
  svg.appendChild(el("line", {x1: L, y1: T, x2: L, y2: H - B, stroke: "#999"}));
  svg.appendChild(el("text", {x: 2, y: T + 8, class: "axis-max"}, fmt(max)));
  svg.appendChild(el("text", {x: 2, y: H - B}, "0"));
  if (labels.length) {
    svg.appendChild(el("text", {x: L, y: H - 6}, labels[0]));
    svg.appendChild(el("text", {x: W - 10, y: H - 6, "text-anchor": "end"}, labels[labels.length - 1]));
  }
  series.forEach((s, k) => {
    const pts = s.values.map((v, i) => `${x(i)},${y(v)}`).join(" ");
    svg.appendChild(el("polyline", {points: pts, fill: "none", stroke: s.color, "stroke-width": 2,
      "data-series": s.name}));
    s.values.forEach((v, i) => {
      const dot = el("circle", {cx: x(i), cy: y(v), r: 2.5, fill: s.color, class: "point",
        "data-label": labels[i], "data-value": v === null ? "" : v});
      dot.appendChild(el("title", {}, `${s.name} ${labels[i]}: ${fmt(v)}`));
      svg.appendChild(dot);
    });
    svg.appendChild(el("text", {x: L + 6 + k * 90, y: T + 8, fill: s.color}, s.name));
  });
  const box = $(target); box.replaceChildren(svg);
}
function barChart(target, items) {
  const W = 440, rowH = 22, H = Math.max(1, items.length) * rowH + 8, L = 130;
  const svg = el("svg", {viewBox: `0 0 ${W} ${H}`, width: "100%", "data-chart": target});
  const max = Math.max(1e-9, ...items.map((i) => i.value));
  items.forEach((item, i) => {
    const w = ((W - L - 70) * item.value) / max;
    svg.appendChild(el("text", {x: 2, y: i * rowH + 16}, item.label));
    svg.appendChild(el("rect", {x: L, y: i * rowH + 4, width: Math.max(1, w), height: rowH - 8,
      fill: "#4f7cff", class: "bar", "data-label": item.label, "data-value": item.value}));
    svg.appendChild(el("text", {x: L + w + 4, y: i * rowH + 16, class: "data-label"}, fmt(item.value)));
  });
  $(target).replaceChildren(svg);
}
function table(target, rows) {
  const head = "<tr><th>model</th><th>calls</th><th>tokens</th><th>cost</th><th>errors</th><th>p95 ms</th></tr>";
  const body = rows.map((r) => `<tr><td>${escape(r.key)}</td><td>${r.count}</td><td>${r.total_tokens}</td>` +
    `<td>${fmt(r.cost_usd)}</td><td>${(r.error_rate * 100).toFixed(1)}%</td><td>${fmt(r.latency_p95_ms)}</td></tr>`).join("");
  $(target).innerHTML = `<table>${head}${body}</table>`;
}
function alertTable(alerts) {
  if (!alerts.length) { $("alerts").textContent = "none"; return; }
  const head = "<tr><th>when</th><th>kind</th><th>window</th><th>spent</th><th>limit</th><th>message</th></tr>";
  const body = alerts.map((a) => `<tr class="alert" data-alert-kind="${escape(a.kind)}"><td>${escape(new Date(a.occurred_at).toLocaleString())}</td>` +
    `<td>${escape(a.budget ? `${a.budget} ${Number((a.threshold * 100).toPrecision(4))}%` : a.kind)}</td><td>${escape(a.window)}</td>` +
    `<td>${fmt(a.spent_usd)}</td><td>${fmt(a.limit_usd)}</td><td>${escape(a.message)}</td></tr>`).join("");
  $("alerts").innerHTML = `<table>${head}${body}</table>`;
}
async function usageTable(q, token) {
  const by = $("usage-by").value;
  const data = await api(`/api/v1/llmops/usage?${q}&group_by=${by}`, token);
  const head = `<tr><th>${escape(by)}</th><th>calls</th><th>tokens</th><th>cost</th></tr>`;
  const body = data.groups.map((g) => `<tr class="usage-group" data-group="${escape(g.group ?? "")}"><td>${escape(g.group ?? "(none)")}</td>` +
    `<td>${g.count}</td><td>${g.total_tokens}</td><td>${fmt(g.cost_usd)}</td></tr>`).join("");
  $("table-usage").innerHTML = `<table>${head}${body}</table>`;
}
function escape(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"})[c]);
}
async function api(path, token) {
  const res = await fetch(path, {headers: {Authorization: `Bearer ${token}`}});
  const body = await res.json();
  if (!res.ok) throw new Error((body.error && body.error.message) || res.statusText);
  return body.data;
}
async function load() {
  const token = $("token").value.trim();
  if (!token) { $("status").textContent = "enter a token"; return; }
  sessionStorage.setItem("faas-llmops-token", token);
  const hours = Number($("range").value);
  const to = new Date(Date.now() + 3600e3);
  const from = new Date(to.getTime() - (hours + 1) * 3600e3);
  const q = `from=${encodeURIComponent(from.toISOString())}&to=${encodeURIComponent(to.toISOString())}`;
  const step = hours > 48 ? "day" : "hour";
  $("status").textContent = "loading...";
  try {
    const [time, models, alerts] = await Promise.all([
      api(`/api/v1/llmops/metrics?${q}&group_by=${step}`, token),
      api(`/api/v1/llmops/metrics?${q}&group_by=model`, token),
      api("/api/v1/llmops/alerts?limit=20", token),
    ]);
    render(time, models);
    alertTable(alerts);
    await usageTable(q, token);
    $("status").textContent = `tenant ${time.tenant_id}, updated ${new Date().toLocaleTimeString()}`;
    document.body.setAttribute("data-loaded", "true");
  } catch (err) {
    $("status").textContent = `error: ${err.message}`;
    document.body.setAttribute("data-error", err.message);
  }
}
function render(time, models) {
  const t = time.totals;
  const kpis = [["calls", t.count], ["tokens", t.total_tokens], ["cost (USD)", t.cost_usd],
    ["error rate", `${(t.error_rate * 100).toFixed(1)}%`], ["p50 ms", t.latency_p50_ms],
    ["p95 ms", t.latency_p95_ms], ["p99 ms", t.latency_p99_ms]];
  $("totals").innerHTML = kpis.map(([k, v]) =>
    `<div class="kpi" data-kpi="${k}"><b>${typeof v === "number" ? fmt(v) : escape(v)}</b>${k}</div>`).join("");
  const s = time.series;
  const labels = s.map((p) => p.key.replace(":00:00Z", "h").replace("T", " "));
  lineChart("chart-cost", labels, [{name: "cost", color: "#4f7cff", values: s.map((p) => p.cost_usd)}]);
  lineChart("chart-tokens", labels, [
    {name: "prompt", color: "#2a9d8f", values: s.map((p) => p.prompt_tokens)},
    {name: "completion", color: "#e76f51", values: s.map((p) => p.completion_tokens)}]);
  lineChart("chart-latency", labels, [
    {name: "p50", color: "#264653", values: s.map((p) => p.latency_p50_ms)},
    {name: "p95", color: "#f4a261", values: s.map((p) => p.latency_p95_ms)}]);
  lineChart("chart-errors", labels, [{name: "errors", color: "#d62828", values: s.map((p) => p.errors)}]);
  barChart("chart-models", models.series.map((m) => ({label: m.key, value: m.cost_usd})));
  table("table-models", models.series);
}
$("load").addEventListener("click", load);
$("range").addEventListener("change", load);
$("usage-by").addEventListener("change", load);
if ($("token").value) load();
</script></body></html>
"""
