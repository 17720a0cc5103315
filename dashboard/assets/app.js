// The dashboard's only script, served by the dashboard itself. It refreshes the page's
// data in place every few seconds from the JSON API (no reload: scroll position, form
// fields and the query string stay), pauses while the tab is hidden, and draws charts
// as SVG. Data only ever reaches the page as text (textContent), never as markup.
"use strict";

const refreshMs = 1000 * (parseFloat(document.body.dataset.refreshSeconds) || 3);
const SVG = "http://www.w3.org/2000/svg";
const COLORS = ["#3b6fd8", "#e4892b", "#3aa569", "#c4443b", "#8a5cc4", "#6b7a8f", "#d3b13a", "#2fa3b5"];

function el(name, attrs, text) {
  const node = name.startsWith("svg:") ? document.createElementNS(SVG, name.slice(4)) : document.createElement(name);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

async function getJson(url) {
  const response = await fetch(url, { headers: { accept: "application/json" } });
  if (!response.ok) throw new Error(url + ": " + response.status);
  return response.json();
}

function markUpdated() {
  const t = document.getElementById("last-updated");
  if (t) t.textContent = new Date().toLocaleTimeString();
}

// ---- overview: counters, state, rate ----
const lastCounts = new Map();
function drawFiring(firing) {
  const section = document.getElementById("firing");
  const list = document.getElementById("firing-list");
  if (!section || !list) return;
  list.replaceChildren(...firing.map(a => {
    const item = el("li", { class: "alert-firing" });
    item.append(el("b", {}, a.rule), ` ${a.instance} on `, el("a", { href: "/pipelines/" + encodeURIComponent(a.pipeline) }, a.pipeline), `: ${a.value ?? ""} (${a.severity})`);
    return item;
  }));
  section.hidden = firing.length === 0;
}

// A pipeline's state badge, with its replay progress if it has one.
function drawState(badge, s) {
  const progress = s.progress == null ? "" : " " + Math.round(s.progress * 100) + "%";
  badge.textContent = s.state + progress;
  badge.className = "state state-" + s.state;
}

async function refreshOverview(table) {
  const { pipelines, firing } = await getJson("/api/pipelines");
  drawFiring(firing || []);
  const now = Date.now();
  for (const s of pipelines) {
    const row = table.querySelector(`tr[data-pipeline="${CSS.escape(s.name)}"]`);
    if (!row) { location.reload(); return; } // a new pipeline: its row needs the server's markup
    const set = (field, text) => { const c = row.querySelector(`[data-field="${field}"]`); if (c && c.firstChild?.nodeType !== 1) c.textContent = text; };
    drawState(row.querySelector('[data-field="state"]'), s);
    for (const f of ["events_in", "events_ok", "events_late", "lag", "last_batch_at"]) set(f, s[f] ?? "");
    const bad = row.querySelector('[data-field="events_bad"] a');
    if (bad) bad.textContent = s.events_bad;
    drawQlikIndicator(row, s);
    const last = lastCounts.get(s.name);
    if (last) set("rate", Math.round((s.events_in - last.count) / ((now - last.at) / 1000)));
    lastCounts.set(s.name, { count: s.events_in, at: now });
  }
}

// The compact Qlik indicator under a pipeline's state (the server words it), if it has targets.
function drawQlikIndicator(row, s) {
  let badge = row.querySelector('[data-field="qlik"]');
  if (!s.qlik_summary) { if (badge) badge.parentElement.remove(); return; }
  if (!badge) {
    badge = el("span", { "data-field": "qlik" });
    const link = el("a", { class: "qlik-indicator", href: "/pipelines/" + encodeURIComponent(s.name) + "#qlik" });
    link.appendChild(badge);
    row.querySelector('[data-field="state"]').after(" ", link);
  }
  badge.textContent = s.qlik_summary.text;
  badge.className = "state state-" + s.qlik_summary.state;
}

// ---- pipeline page: Qlik targets, table and chart ----
const QLIK_COLUMNS = ["target", "app table", "state", "reloads", "last reload", "pending rows", "app version", "last error"];

// Seconds with one or two decimals (as the server writes them): 1.25, 1.5, 3.0.
function secondsText(seconds) {
  const text = seconds.toFixed(2);
  return text.endsWith("0") ? text.slice(0, -1) : text;
}

function lastReloadText(q) {
  if (q.last_reload_at == null) return "";
  const parts = [q.last_reload_at];
  if (q.last_reload_seconds != null) parts.push(secondsText(q.last_reload_seconds) + " s");
  parts.push(q.last_reload_rows + " rows");
  return parts.join(" · ");
}

// The section of the pipeline's Qlik targets: made when the first one appears, hidden
// when there are none (or the store could not read them).
function drawQlik(targets) {
  let section = document.getElementById("qlik");
  if (!section) {
    if (targets.length === 0) return;
    const head = el("tr");
    for (const c of QLIK_COLUMNS) head.appendChild(el("th", {}, c));
    const table = el("table", { class: "qlik-targets" });
    table.append(el("thead"), el("tbody"));
    table.tHead.appendChild(head);
    section = el("section", { id: "qlik", class: "qlik" });
    section.append(el("h2", {}, "Qlik targets"), table);
    document.getElementById("pipeline").after(section);
  }
  section.hidden = targets.length === 0;
  const cell = (field, text, attrs) => el("td", { "data-field": field, ...attrs }, String(text ?? ""));
  const body = el("tbody");
  for (const q of targets) {
    const tr = el("tr", { "data-target": q.target });
    const state = el("td");
    state.appendChild(el("span", { class: "state state-" + q.state, "data-field": "state" }, q.state));
    tr.append(cell("target", q.target), cell("table", q.table), state, cell("reloads", q.reloads),
      cell("last_reload", lastReloadText(q)), cell("pending_rows", q.pending_rows), cell("app_version", q.app_version),
      cell("last_error", q.last_error, { class: "error" }));
    body.appendChild(tr);
  }
  const table = section.querySelector("table");
  table.replaceChild(body, table.tBodies[0]);
}

function drawTable(table, view) {
  const body = el("tbody");
  for (const row of view.rows) {
    const tr = el("tr");
    for (const cell of row) tr.appendChild(el("td", {}, cell));
    body.appendChild(tr);
  }
  table.replaceChild(body, table.tBodies[0]);
  const pager = document.getElementById("pager");
  if (pager) {
    const text = [...pager.childNodes].find(n => n.nodeType === 3 && n.textContent.includes("page"));
    if (text) text.textContent = ` page ${view.page} of ${view.pages} (${view.total} rows) `;
  }
}

// A windowed result: a line per category over window start (with the alert
// thresholds), and, with a category column, the same values as stacked bars. A keyed
// result: bars of its largest values.
function drawChart(figure, chart) {
  figure.replaceChildren();
  if (!chart || chart.kind === "none" || chart.x.length === 0) return;
  drawSvg(figure, chart, chart.kind, chart.thresholds || []);
  if (chart.stacked) drawSvg(figure, chart, "stacked", []);
  if (chart.series.length > 1) {
    const legend = el("figcaption", { class: "legend" });
    chart.series.forEach((s, k) => { const item = el("span", {}, "■ " + s.name); item.style.color = COLORS[k % COLORS.length]; legend.appendChild(item); });
    figure.appendChild(legend);
  }
}

function drawSvg(figure, chart, kind, thresholds) {
  const W = 900, H = 280, L = 60, R = 10, T = 10, B = 60;
  const svg = el("svg:svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": chart.y_label });
  const n = chart.x.length;
  const stacked = kind === "stacked";
  const totals = chart.x.map((_, i) => chart.series.reduce((a, s) => stacked ? a + s.values[i] : Math.max(a, s.values[i]), 0));
  const max = Math.max(...totals, ...thresholds.map(t => t.value * 1.1), 0) || 1;
  const y = v => T + (H - T - B) * (1 - v / max);
  const step = (W - L - R) / Math.max(n, 1);
  svg.appendChild(el("svg:line", { x1: L, y1: y(0), x2: W - R, y2: y(0), stroke: "#999" }));
  for (const f of [0, 0.5, 1]) {
    svg.appendChild(el("svg:text", { x: L - 6, y: y(max * f) + 4, "text-anchor": "end", "font-size": 11 }, String(+(max * f).toPrecision(3))));
  }
  if (kind === "line") {
    chart.series.forEach((s, k) => {
      const points = s.values.map((v, i) => `${L + step * (i + 0.5)},${y(v)}`).join(" ");
      svg.appendChild(el("svg:polyline", { points, fill: "none", stroke: COLORS[k % COLORS.length], "stroke-width": 2 }));
    });
  } else {
    const base = new Array(n).fill(0);
    chart.series.forEach((s, k) => {
      s.values.forEach((v, i) => {
        const top = stacked ? base[i] + v : v;
        const bar = el("svg:rect", { x: L + step * i + step * 0.1, width: step * 0.8, y: y(top), height: Math.max(0, y(stacked ? base[i] : 0) - y(top)), fill: COLORS[k % COLORS.length] });
        bar.appendChild(el("svg:title", {}, `${chart.x[i]} · ${s.name}: ${v}`));
        svg.appendChild(bar);
        if (stacked) base[i] = top;
      });
    });
  }
  for (const t of thresholds) {
    const line = el("svg:line", { x1: L, x2: W - R, y1: y(t.value), y2: y(t.value), stroke: "#c4443b", "stroke-dasharray": "6 4", class: "threshold" });
    line.appendChild(el("svg:title", {}, `${t.rule}: ${t.value}`));
    svg.appendChild(line);
    svg.appendChild(el("svg:text", { x: W - R - 4, y: y(t.value) - 4, "text-anchor": "end", "font-size": 11, fill: "#c4443b" }, `${t.rule} ${t.value}`));
  }
  const every = Math.ceil(n / 12);
  chart.x.forEach((label, i) => {
    if (i % every) return;
    svg.appendChild(el("svg:text", { x: L + step * (i + 0.5), y: H - B + 14, "text-anchor": "middle", "font-size": 10 }, label.length > 16 ? label.slice(-8) : label));
  });
  svg.appendChild(el("svg:text", { x: L, y: H - 8, "font-size": 11 }, `${chart.y_label} by ${chart.x_label}${stacked ? " (stacked)" : ""}`));
  figure.appendChild(svg);
}

// The pipeline's own state, counters and error at the top of its page.
function drawStatus(s) {
  drawState(document.getElementById("state"), s);
  for (const f of ["events_in", "events_ok", "events_bad", "events_late", "watermark"]) {
    const c = document.querySelector(`#counters [data-field="${f}"]`);
    if (c) c.textContent = s[f] ?? "";
  }
  document.getElementById("watermark-part").hidden = !s.watermark;
  document.getElementById("watermark-help").hidden = !s.watermark;
  const error = document.getElementById("last-error");
  error.textContent = s.last_error ?? "";
  error.hidden = !s.last_error;
}

// A pipeline page: its status always; its table and chart once it has a result.
async function refreshPipeline(page) {
  const name = encodeURIComponent(page.dataset.pipeline);
  const query = location.search;
  const table = document.getElementById("result");
  const [detail, view, chart] = await Promise.all([
    getJson(`/api/pipelines/${name}`),
    table ? getJson(`/api/pipelines/${name}/rows${query}`) : null,
    table ? getJson(`/api/pipelines/${name}/chart${query}`) : null,
  ]);
  drawStatus(detail.status);
  if (table) {
    drawTable(table, view);
    drawChart(document.getElementById("chart"), chart);
  }
  drawQlik(detail.qlik || []);
}

// ---- bad records: the latest ones, as they come ----
async function refreshBadRecords(section) {
  const { records } = await getJson(`/api/pipelines/${encodeURIComponent(section.dataset.pipeline)}/bad`);
  const shown = records.slice(0, parseInt(section.dataset.shown, 10));
  const body = el("tbody");
  for (const r of shown) {
    const raw = el("td");
    raw.appendChild(el("code", {}, r.raw));
    const tr = el("tr");
    tr.append(el("td", {}, r.source_offset), el("td", {}, r.reason), raw);
    body.appendChild(tr);
  }
  const table = section.querySelector("table");
  table.replaceChild(body, table.tBodies[0]);
  const latest = records.length > shown.length ? `; the latest ${shown.length} by offset` : "";
  document.getElementById("bad-total").textContent = `${records.length} bad records${latest}.`;
}

// ---- the refresh loop ----
let timer = null;
async function refresh() {
  try {
    const overview = document.getElementById("pipelines");
    const pipeline = document.getElementById("pipeline");
    const bad = document.getElementById("bad-records");
    if (overview) await refreshOverview(overview);
    if (pipeline) await refreshPipeline(pipeline);
    if (bad) await refreshBadRecords(bad);
    markUpdated();
  } catch (e) {
    const t = document.getElementById("last-updated");
    if (t) t.textContent = "failed (" + e.message + ")";
  }
  schedule();
}
function schedule() {
  clearTimeout(timer);
  if (!document.hidden) timer = setTimeout(refresh, refreshMs);
}
document.addEventListener("visibilitychange", () => { if (document.hidden) clearTimeout(timer); else refresh(); });
// "show _id": the table's first column, and the CSV export's.
function showId(shown) {
  document.getElementById("result").classList.toggle("hide-id", !shown);
  const csv = document.getElementById("csv");
  csv.href = csv.dataset.href + (shown ? "&id=true" : "");
}
document.addEventListener("DOMContentLoaded", () => {
  markUpdated();
  const toggle = document.getElementById("show-id");
  if (toggle) {
    showId(toggle.checked);
    toggle.addEventListener("change", () => showId(toggle.checked));
  }
  const pipeline = document.getElementById("pipeline");
  if (pipeline) refreshPipeline(pipeline).catch(() => {});
  schedule();
});
