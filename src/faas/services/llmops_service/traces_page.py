# ruff: noqa: E501  (the embedded page keeps its JavaScript lines whole)
"""The LLMOps traces page (`/llmops/traces`): recent runs, and a run as a tree of its steps,
model calls, tools and retrievals with tokens, cost and latency per node. Self-contained like
the dashboard (inline CSS and JS, no external requests); public, its data calls carry the
token typed in or passed as `?token=`. `?session=` filters by agent session; `?trace=<id>`
opens that run and `?open=first` the newest (as a click on its row would)."""

from __future__ import annotations

from typing import Final

TRACES_PATH: Final = "/llmops/traces"

TRACES_HTML: Final = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>faas LLMOps traces</title>
<style>
body{font:14px system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{background:#1d2330;color:#fff;padding:10px 18px;display:flex;gap:12px;align-items:center}
header h1{font-size:17px;margin:0 12px 0 0}header a{color:#9cf}
input,button{font:inherit;padding:4px 8px}
main{padding:16px;display:grid;grid-template-columns:minmax(420px,1fr) 2fr;gap:16px}
.card{background:#fff;border-radius:8px;padding:12px 14px;box-shadow:0 1px 3px #0002;overflow:auto}
.card h2{font-size:14px;margin:0 0 8px}
table{border-collapse:collapse;width:100%}td,th{padding:3px 6px;text-align:right}
td:first-child,th:first-child{text-align:left}
tr.trace{cursor:pointer}tr.trace:hover,tr.trace.open{background:#e8f0fe}
ul.tree{list-style:none;margin:0;padding-left:18px;border-left:1px dotted #bbb}
li.span>div{display:flex;gap:10px;align-items:center;padding:2px 0}
.name{font-weight:600}.kind{font-size:11px;opacity:.7}.meta{font-size:12px;color:#445}
.error .name{color:#b00020}
.bar{height:6px;background:#4a7bd0;border-radius:3px;min-width:2px}
#status{margin-left:auto;font-size:12px;opacity:.8}
</style></head>
<body>
<header><h1>LLMOps traces</h1><a href="/llmops/dashboard">dashboard</a>
<input id="token" type="password" placeholder="bearer token" size="28">
<input id="session" placeholder="session id (optional)" size="20">
<button id="load">Load</button><span id="status">enter a token</span></header>
<main>
<section class="card"><h2>Runs</h2><div id="runs">none</div></section>
<section class="card"><h2>Run</h2><div id="tree">pick a run</div></section>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
$("token").value = params.get("token") || sessionStorage.getItem("faas-llmops-token") || "";
$("session").value = params.get("session") || "";

function escape(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"})[c]);
}
function ms(v) { return v >= 1000 ? `${(v / 1000).toFixed(2)} s` : `${v.toFixed(1)} ms`; }
function usd(v) { return v ? `$${v.toFixed(v < 0.01 ? 5 : 3)}` : "$0"; }
async function api(path) {
  const response = await fetch(path, {headers: {Authorization: `Bearer ${$("token").value.trim()}`}});
  const body = await response.json();
  if (!response.ok) throw new Error(body.error ? body.error.message : response.statusText);
  return body.data;
}
function node(span, total) {
  const tokens = span.input_tokens || span.output_tokens ? ` · ${span.input_tokens} in / ${span.output_tokens} out` : "";
  const cost = span.cost_usd ? ` · ${usd(span.cost_usd)}` : "";
  const width = Math.max(2, Math.round(160 * span.duration_ms / (total || 1)));
  const kids = span.children.length ? `<ul class="tree">${span.children.map((c) => node(c, total)).join("")}</ul>` : "";
  return `<li class="span ${span.status === "error" ? "error" : ""}" data-span-name="${escape(span.name)}" data-span-kind="${escape(span.kind)}">` +
    `<div><span class="name">${escape(span.name)}</span><span class="kind">${escape(span.kind)} · ${escape(span.service)}</span>` +
    `<span class="bar" style="width:${width}px"></span><span class="meta" data-latency>${ms(span.duration_ms)}${tokens}${cost}</span></div>${kids}</li>`;
}
async function openTrace(row) {
  document.querySelectorAll("tr.trace.open").forEach((r) => r.classList.remove("open"));
  row.classList.add("open");
  const tree = await api(`/api/v1/llmops/traces/${row.dataset.traceId}`);
  const total = Math.max(...tree.roots.map((r) => r.duration_ms), 1);
  $("tree").innerHTML = `<ul class="tree" data-trace-id="${escape(tree.trace_id)}">${tree.roots.map((r) => node(r, total)).join("")}</ul>`;
  document.body.dataset.opened = "true";
}
async function load() {
  sessionStorage.setItem("faas-llmops-token", $("token").value.trim());
  const session = $("session").value.trim();
  $("status").textContent = "loading...";
  try {
    const runs = await api(`/api/v1/llmops/traces?limit=100${session ? `&session_id=${encodeURIComponent(session)}` : ""}`);
    if (!runs.length) { $("runs").textContent = "none"; }
    else {
      const head = "<tr><th>run</th><th>started</th><th>latency</th><th>spans</th><th>tokens</th><th>cost</th></tr>";
      $("runs").innerHTML = `<table>${head}${runs.map((r) => `<tr class="trace" data-trace-id="${escape(r.trace_id)}">` +
        `<td>${escape(r.name)}${r.errors ? " ⚠" : ""}${r.session_id ? `<br><small>session ${escape(r.session_id)}</small>` : ""}</td>` +
        `<td>${escape(new Date(r.started_at).toLocaleTimeString())}</td><td>${ms(r.duration_ms)}</td><td>${r.spans}</td>` +
        `<td>${r.input_tokens + r.output_tokens}</td><td>${usd(r.cost_usd)}</td></tr>`).join("")}</table>`;
      document.querySelectorAll("tr.trace").forEach((row) => row.addEventListener("click", () => openTrace(row).catch(fail)));
    }
    $("status").textContent = `${runs.length} runs, updated ${new Date().toLocaleTimeString()}`;
    document.body.dataset.loaded = "true";
    const wanted = params.get("trace");
    const row = wanted ? document.querySelector(`tr.trace[data-trace-id="${CSS.escape(wanted)}"]`)
      : params.get("open") === "first" ? document.querySelector("tr.trace") : null;
    if (row) row.click();
  } catch (error) { fail(error); }
}
function fail(error) { $("status").textContent = `error: ${error.message}`; }
$("load").addEventListener("click", load);
if ($("token").value) load();
</script>
</body></html>
"""
