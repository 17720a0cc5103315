// The dashboard's only script, served by the dashboard itself. It refreshes the page's
// data in place every few seconds from the JSON API (no reload: scroll position, form
// fields and the query string stay), pauses while the tab is hidden, and draws charts
// with uPlot. Data only ever reaches the page as text (textContent, or uPlot's canvas
// and legend, which write text), never as markup.
"use strict";

const refreshMs = 1000 * (parseFloat(document.body.dataset.refreshSeconds) || 3);
// The zone times are shown in (UTC unless the reader picked another; see zone.rs).
const ZONE = document.body.dataset.zone || "UTC";
const COLORS = ["#3b6fd8", "#e4892b", "#3aa569", "#c4443b", "#8a5cc4", "#6b7a8f", "#d3b13a", "#2fa3b5"];

function el(name, attrs, text) {
  const node = document.createElement(name);
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
  if (t) t.textContent = timeText(Date.now() / 1000).slice(11) + " " + ZONE;
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
    set("watermark_delay", s.watermark ? delayText(now / 1000 - Date.parse(s.watermark) / 1000) : "");
    const bad = row.querySelector('[data-field="events_bad"] a');
    if (bad) bad.textContent = s.events_bad;
    drawQlikIndicator(row, s);
    const last = lastCounts.get(s.name);
    if (last) set("rate", Math.round((s.events_in - last.count) / ((now - last.at) / 1000)));
    lastCounts.set(s.name, { count: s.events_in, at: now });
  }
  const rows = [...table.querySelectorAll("tr[data-pipeline]")];
  await Promise.all([refreshHealth(table), ...rows.map(refreshMain)]);
}

// ---- overview: each pipeline's result at a glance ----
// A windowed result: a small line of its first value column summed per window over
// the pipeline page's default range (the last hour of event time), from the same chart
// API; a single row: its values (the server writes them, the refresh follows them);
// a keyed result: its largest values of the first value column as bars. One request
// per pipeline and refresh.
const mainCharts = new Map(); // pipeline → { kind, plot?, holder } (for the browser tests)
window.dashboardMainCharts = mainCharts;
const MAIN_BARS = 5;

// A time chart's lines (one per category) added up per window start; null where none has a value.
function summedPerWindow(c) {
  return c.x.map((_, i) => c.series.reduce((sum, s) => s.values[i] == null ? sum : (sum ?? 0) + s.values[i], null));
}

function mainChartOptions(width) {
  return {
    width, height: 44,
    padding: [4, 1, 1, 1],
    legend: { show: false },
    cursor: { show: false },
    select: { show: false },
    scales: { x: { time: true }, y: { range: (u, min, max) => [Math.min(0, min ?? 0), Math.max(max ?? 0, 0) * 1.1 || 1] } },
    axes: [{ show: false }, { show: false }],
    series: [{}, { stroke: COLORS[0], width: 1.5, fill: COLORS[0] + "22", spanGaps: false, points: { show: false } }],
  };
}

async function refreshMain(row) {
  const cell = row.querySelector("td.main");
  const kind = cell && cell.dataset.main;
  if (!kind) return;
  const pipeline = row.dataset.pipeline;
  const name = encodeURIComponent(pipeline);
  try {
    if (kind === "value") {
      const view = await getJson(`/api/pipelines/${name}/rows`);
      if (view.rows.length !== 1) return;
      view.columns.forEach((column, k) => {
        const value = cell.querySelector(`[data-tile="${CSS.escape(pipeline + "/" + column.name)}"]`);
        if (value) value.textContent = view.rows[0][k + 1];
      });
      return;
    }
    const { charts: list } = await getJson(`/api/pipelines/${name}/chart`);
    drawMain(cell, pipeline, list[0]);
    cell.removeAttribute("title");
  } catch (e) {
    cell.title = "could not read the result: " + e.message;
  }
}

function drawMain(cell, pipeline, c) {
  let entry = mainCharts.get(pipeline);
  if (entry && (!c || entry.kind !== c.kind)) {
    if (entry.plot) entry.plot.destroy();
    cell.replaceChildren();
    mainCharts.delete(pipeline);
    entry = null;
  }
  if (!c) return;
  if (!entry) {
    const caption = el("div", { class: "main-caption" });
    const holder = el("div", { class: "main-" + c.kind });
    cell.replaceChildren(caption, holder);
    entry = { kind: c.kind, caption, holder };
    mainCharts.set(pipeline, entry);
  }
  if (c.kind === "time") {
    const sums = summedPerWindow(c);
    const data = [c.x, sums];
    if (entry.plot) entry.plot.setData(data);
    else entry.plot = new uPlot(mainChartOptions(200), data, entry.holder);
    const known = sums.filter(v => v != null);
    const latest = known.length ? numberText(known[known.length - 1]) : "no windows yet";
    const summed = c.series.length > 1 || c.summed_over.length ? " (sum per window)" : "";
    entry.caption.textContent = `${c.value}${summed}: ${latest}`;
    entry.holder.title = known.length
      ? `${c.value}${summed} per window over the last hour of event time: latest ${latest}, highest ${numberText(Math.max(...known))}`
      : `${c.value}: no windows in the last hour`;
    return;
  }
  // Bars: the largest values, each named by its key.
  const values = c.series[0].values.slice(0, MAIN_BARS);
  const highest = Math.max(0, ...values.filter(v => v != null));
  entry.caption.textContent = `${c.value}, largest:`;
  entry.holder.replaceChildren(...values.map((v, i) => {
    const bar = el("div", { class: "bar" });
    const fill = el("span", { class: "fill" });
    fill.style.width = highest > 0 && v > 0 ? (100 * v / highest).toFixed(1) + "%" : "0";
    bar.append(el("span", { class: "label" }, c.labels[i] ?? ""), fill, el("span", { class: "value" }, numberText(v)));
    return bar;
  }));
}

// A delay in seconds as people read it: `12 s`, `4.5 min`, `2.1 h`, `3 d`.
function delayText(seconds) {
  const sign = seconds < 0 ? "-" : "";
  const s = Math.abs(seconds);
  if (s < 60) return sign + Math.round(s) + " s";
  if (s < 3600) return sign + +(s / 60).toFixed(1) + " min";
  if (s < 86400) return sign + +(s / 3600).toFixed(1) + " h";
  return sign + +(s / 86400).toFixed(1) + " d";
}

// ---- overview: each pipeline's health over the last hour or day (small uPlot charts) ----
// The dashboard samples every pipeline's status every 10 s into a history kept in the
// store (see health.rs); each value cell gets a line of it, over a fixed span ending
// now, so an idle or stalled pipeline shows as such, and a gap where nothing was sampled.
const HEALTH = [
  { measure: "events_per_second", label: "events/s", color: "#3b6fd8", text: numberText },
  { measure: "lag", label: "lag", color: "#e4892b", text: numberText },
  { measure: "watermark_delay_seconds", label: "watermark delay", color: "#8a5cc4", text: delayText },
];
const sparklines = new Map(); // "pipeline/measure" → uPlot
window.dashboardSparklines = sparklines; // for the browser tests

function sparklineOptions(color, span) {
  return {
    width: 140, height: 30,
    padding: [3, 1, 1, 1],
    legend: { show: false },
    cursor: { show: false },
    select: { show: false },
    scales: {
      x: { time: true, range: () => { const now = Date.now() / 1000; return [now - span, now]; } },
      y: { range: (u, min, max) => [Math.min(0, min ?? 0), Math.max(max ?? 0, 0) * 1.1 || 1] },
    },
    axes: [{ show: false }, { show: false }],
    series: [{}, { stroke: color, width: 1.5, fill: color + "22", spanGaps: false, points: { show: false } }],
  };
}

// `t` and `values` with a null where samples are more than two periods apart (the
// dashboard was not running), so the line breaks there instead of bridging it.
function withGaps(t, values, period) {
  const x = [], y = [];
  t.forEach((at, i) => {
    if (i > 0 && at - t[i - 1] > 2 * period) { x.push(t[i - 1] + period); y.push(null); }
    x.push(at);
    y.push(values[i]);
  });
  return [x, y];
}

async function refreshHealth(table) {
  const range = table.dataset.healthRange === "24h" ? "24h" : "1h";
  const span = range === "24h" ? 86400 : 3600;
  const data = await getJson("/api/health?range=" + range);
  for (const series of data.pipelines) {
    const row = table.querySelector(`tr[data-pipeline="${CSS.escape(series.pipeline)}"]`);
    if (!row) continue;
    for (const h of HEALTH) {
      const holder = row.querySelector(`[data-spark="${h.measure}"]`);
      if (!holder) continue;
      const points = withGaps(series.t, series[h.measure], data.resolution_seconds);
      const key = series.pipeline + "/" + h.measure;
      const plot = sparklines.get(key);
      if (plot) plot.setData(points);
      else sparklines.set(key, new uPlot(sparklineOptions(h.color, span), points, holder));
      const known = series[h.measure].filter(v => v != null);
      // Until two refreshes give the live rate, the latest sampled one if it is recent.
      const rate = row.querySelector('[data-field="rate"]');
      const last = series.t.length - 1;
      const recent = last >= 0 && Date.now() / 1000 - series.t[last] < 3 * data.resolution_seconds;
      if (h.measure === "events_per_second" && rate && rate.textContent === "" && recent && series[h.measure][last] != null) {
        rate.textContent = Math.round(series[h.measure][last]);
      }
      holder.title = known.length
        ? `${h.label} over the last ${range === "24h" ? "day" : "hour"}: latest ${h.text(known[known.length - 1])}, highest ${h.text(Math.max(...known))}`
        : `${h.label}: no samples yet`;
    }
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
  // A relative range moves with the data: show where it is now (unless being edited).
  for (const field of ["from", "to"]) {
    const input = document.querySelector(`form.range input[name=${field}]`);
    if (input && view[field] && document.activeElement !== input) input.value = view[field];
  }
  const pager = document.getElementById("pager");
  if (pager) {
    const text = [...pager.childNodes].find(n => n.nodeType === 3 && n.textContent.includes("page"));
    if (text) text.textContent = ` page ${view.page} of ${view.pages} (${view.total} rows) `;
  }
}

// ---- charts (uPlot, served by the dashboard) ----
// One chart per value column: over window start (UTC) a line per category, or the
// largest values of a keyed result as bars. Hovering shows the exact values under the
// cursor; clicking a legend entry hides or shows its line; dragging across a chart
// zooms into that time range (double-click zooms out). A zoomed chart keeps its range
// while the data refreshes; the others follow the range picked above the table.
const charts = new Map(); // value column → { plot, signature }
window.dashboardCharts = charts; // for the browser tests

// Numbers as people read them: whole numbers with separators, others to 4 significant digits.
function numberText(v) {
  if (v == null) return "";
  return Number.isInteger(v) ? v.toLocaleString("en-US") : (+v.toPrecision(4)).toLocaleString("en-US", { maximumFractionDigits: 6 });
}

// `YYYY-MM-DD HH:MM:SS` in `zone` (the page's, by default) from seconds since the epoch.
const timeFormats = new Map();
function timeText(seconds, zone = ZONE) {
  if (!timeFormats.has(zone)) {
    timeFormats.set(zone, new Intl.DateTimeFormat("sv-SE", { timeZone: zone, year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" }));
  }
  return timeFormats.get(zone).format(new Date(seconds * 1000));
}

// Time-axis labels, 24-hour in the page's zone: `HH:MM` (with seconds when ticks are seconds apart),
// the date under the first tick and wherever the day changes; days when ticks are days apart.
function timeTicks(u, splits, axisIdx, space, step) {
  let day = null;
  return splits.map(t => {
    const text = timeText(t);
    const date = text.slice(0, 10), clock = step < 60 ? text.slice(11) : text.slice(11, 16);
    if (step >= 86400) return date;
    const label = date === day ? clock : clock + "\n" + date;
    day = date;
    return label;
  });
}

function xText(c, x) {
  return c.kind === "time" ? timeText(x) + " " + ZONE : (c.labels[x] ?? "");
}

// The box that follows the cursor with the exact values under it.
function showTooltip(u, c) {
  const tip = u.root.querySelector(".tooltip");
  const i = u.cursor.idx;
  if (i == null || u.cursor.left < 0) { tip.hidden = true; return; }
  const lines = [el("b", {}, xText(c, u.data[0][i]))];
  u.series.forEach((s, k) => {
    if (k === 0 || !s.show || u.data[k][i] == null) return;
    const line = el("div", {}, `${s.label}: ${numberText(u.data[k][i])}`);
    line.style.color = s._stroke;
    lines.push(line);
  });
  // Alert transitions within a few pixels of the cursor.
  for (const a of c.annotations || []) {
    if (Math.abs(u.valToPos(a.at, "x") - u.cursor.left) > 4) continue;
    const line = el("div", { class: "annotation" }, `${a.text} (${timeText(a.at)})`);
    line.style.color = ANNOTATION_COLORS[a.to] || "#6b7a8f";
    lines.push(line);
  }
  tip.replaceChildren(...lines);
  tip.hidden = false;
  const left = u.cursor.left + 12, right = u.over.clientWidth - u.cursor.left + 12;
  tip.style.left = left + tip.offsetWidth < u.over.clientWidth ? left + "px" : "";
  tip.style.right = left + tip.offsetWidth < u.over.clientWidth ? "" : right + "px";
  tip.style.top = Math.max(0, u.cursor.top - 10) + "px";
}

// The alert thresholds, as dashed lines with the rule's name.
function drawThresholds(u, c) {
  const ctx = u.ctx;
  ctx.save();
  ctx.setLineDash([6, 4]);
  ctx.font = `${11 * devicePixelRatio}px system-ui`;
  ctx.textAlign = "right";
  for (const t of c.thresholds) {
    ctx.strokeStyle = ctx.fillStyle = t.color || "#c4443b";
    const y = Math.round(u.valToPos(t.value, "y", true));
    ctx.beginPath();
    ctx.moveTo(u.bbox.left, y);
    ctx.lineTo(u.bbox.left + u.bbox.width, y);
    ctx.stroke();
    ctx.fillText(`${t.rule} ${numberText(t.value)}`, u.bbox.left + u.bbox.width - 4, y - 4);
  }
  ctx.restore();
}

// Alert transitions, as vertical lines coloured by the state they went to, where they
// happened (when the rule was evaluated: for live data, close to the window's time).
const ANNOTATION_COLORS = { firing: "#c4443b", recovering: "#d3b13a", pending: "#e4892b", normal: "#3aa569" };
function drawAnnotations(u, c) {
  const ctx = u.ctx;
  ctx.save();
  ctx.setLineDash([2, 3]);
  ctx.lineWidth = devicePixelRatio;
  for (const a of c.annotations || []) {
    if (a.at < u.scales.x.min || a.at > u.scales.x.max) continue;
    const x = Math.round(u.valToPos(a.at, "x", true));
    ctx.strokeStyle = ctx.fillStyle = ANNOTATION_COLORS[a.to] || "#6b7a8f";
    ctx.beginPath();
    ctx.moveTo(x, u.bbox.top);
    ctx.lineTo(x, u.bbox.top + u.bbox.height);
    ctx.stroke();
    ctx.fillRect(x - 3 * devicePixelRatio, u.bbox.top, 6 * devicePixelRatio, 6 * devicePixelRatio);
  }
  ctx.restore();
}

// `holder.c` is the chart's latest description (thresholds and annotations change
// while the plot stays).
function chartOptions(holder, width) {
  const c = holder.c;
  const time = c.kind === "time";
  const summed = c.summed_over.length ? ` (sum over ${c.summed_over.join(", ")})` : "";
  const series = [{ label: time ? `window start (${ZONE})` : "key", value: (u, x) => x == null ? "" : xText(holder.c, x) }];
  c.series.forEach((s, k) => {
    const color = COLORS[k % COLORS.length];
    series.push(time && !holder.bars
      ? { label: s.name, stroke: color, width: 2, spanGaps: false, value: (u, v) => numberText(v) }
      : { label: s.name, stroke: color, fill: color + "aa", width: 1, paths: uPlot.paths.bars({ size: [0.7, 60] }), points: { show: false }, value: (u, v) => numberText(v) });
  });
  const limits = c.thresholds.map(t => t.value);
  return {
    width, height: 260,
    // Times on the axis in the page's zone, like every time on the dashboard.
    tzDate: ts => uPlot.tzDate(new Date(ts * 1000), ZONE),
    scales: {
      x: time ? { time: true } : { time: false, range: (u, min, max) => [min - 0.5, max + 0.5] },
      // From zero (values are counts and sums), with room for the thresholds.
      y: { range: (u, min, max) => uPlot.rangeNum(Math.min(0, min ?? 0, ...limits), Math.max(0, max ?? 0, ...limits), 0.1, true) },
    },
    axes: [
      time ? { label: c.x_label, values: timeTicks, space: 60 } : { label: c.x_label, splits: () => holder.c.x, values: (u, splits) => splits.map(i => holder.c.labels[i] ?? ""), rotate: -30, size: 60 },
      { label: c.value + summed, size: 70, values: (u, splits) => splits.map(numberText) },
    ],
    series,
    // The legend names the lines (a click hides or shows one); the values under the
    // cursor are in the tooltip, so the legend keeps its place as the cursor moves.
    legend: { live: false },
    cursor: { drag: { x: time, y: false, setScale: time } },
    hooks: {
      setCursor: [u => showTooltip(u, holder.c)],
      draw: [u => { drawThresholds(u, holder.c); drawAnnotations(u, holder.c); }],
    },
  };
}

function chartData(c) {
  return [c.x, ...c.series.map(s => s.values)];
}

function drawCharts(section, data) {
  const shown = new Set();
  for (const c of data.charts) {
    shown.add(c.value);
    const signature = c.kind + "|" + c.series.map(s => s.name).join("|") + "|" + c.thresholds.map(t => t.rule + t.value).join("|") + "|" + c.summed_over.join(",");
    let entry = charts.get(c.value);
    if (entry && entry.signature !== signature) {
      entry.plot.destroy();
      entry.figure.remove();
      entry = null;
    }
    if (!entry) {
      const figure = el("figure", { class: "chart", "data-value": c.value });
      figure.appendChild(el("figcaption", {}, c.value));
      section.appendChild(figure);
      const holder = { c };
      const plot = new uPlot(chartOptions(holder, Math.max(300, section.clientWidth - 20)), chartData(c), figure);
      // For the benchmark's time to first chart.
      if (!performance.getEntriesByName("first-chart").length) performance.mark("first-chart");
      const tip = el("div", { class: "tooltip" });
      tip.hidden = true;
      plot.over.appendChild(tip);
      entry = { plot, signature, figure, holder };
      charts.set(c.value, entry);
    } else {
      // A zoomed chart keeps its range; the others follow the data.
      const [first, last] = [c.x[0], c.x[c.x.length - 1]];
      const x = entry.plot.scales.x;
      const zoomed = c.kind === "time" && x.min != null && (x.min > entry.first || x.max < entry.last);
      entry.holder.c = c;
      entry.plot.setData(chartData(c), !zoomed);
      Object.assign(entry, { first, last });
      continue;
    }
    Object.assign(entry, { first: c.x[0], last: c.x[c.x.length - 1] });
  }
  for (const [value, entry] of charts) {
    if (shown.has(value)) continue;
    entry.plot.destroy();
    entry.figure.remove();
    charts.delete(value);
  }
  section.hidden = data.charts.length === 0;
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
  const [detail, view, chartList] = await Promise.all([
    getJson(`/api/pipelines/${name}`),
    table ? getJson(`/api/pipelines/${name}/rows${query}`) : null,
    table ? getJson(`/api/pipelines/${name}/chart${query}`) : null,
  ]);
  drawStatus(detail.status);
  if (table) {
    drawTable(table, view);
    drawCharts(document.getElementById("charts"), chartList);
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

// ---- panels as code: one per file of the panels folder (see /api/panels) ----
// Drawn from the pipeline's chart and rows API with the panel's query (its columns,
// filters and range); a panel whose file changed is drawn anew, one whose file went
// away is removed. On a pipeline page, that pipeline's panels only.
const panels = new Map(); // file → { signature, node, plot?, holder? } (for the browser tests)
window.dashboardPanels = panels;

function panelChart(entry, p, c) {
  const thresholds = [...c.thresholds, ...p.thresholds.map(t => ({ rule: "", value: t.value, color: t.color }))];
  const chart = { ...c, thresholds };
  if (entry.plot && entry.plotKind === chart.kind) {
    entry.holder.c = chart;
    entry.plot.setData(chartData(chart));
    return;
  }
  if (entry.plot) entry.plot.destroy();
  entry.holder = { c: chart, bars: p.kind === "bar" };
  entry.body.replaceChildren();
  entry.plot = new uPlot(chartOptions(entry.holder, Math.max(300, entry.node.parentNode.clientWidth - 20)), chartData(chart), entry.body);
  entry.plotKind = chart.kind;
}

async function drawPanel(entry, p) {
  const base = `/api/pipelines/${encodeURIComponent(p.pipeline)}`;
  const query = p.query ? "?" + p.query : "";
  if (p.kind === "table") {
    const view = await getJson(`${base}/rows${query}`);
    // With `columns`: those, beside the keys (the columns that are not numbers).
    const numeric = c => /^(integer|real|decimal)$/i.test(String(c.column_type));
    const shown = view.columns.map((c, k) => [c.name, k + 1, c]).filter(([name, , c]) => !p.columns.length || p.columns.includes(name) || !numeric(c));
    const table = el("table", { class: "result" });
    const head = el("tr");
    for (const [name] of shown) head.append(el("th", {}, name));
    table.append(el("thead"), el("tbody"));
    table.tHead.append(head);
    for (const row of view.rows) {
      const tr = el("tr");
      for (const [, k] of shown) tr.append(el("td", {}, row[k]));
      table.tBodies[0].append(tr);
    }
    entry.body.replaceChildren(table);
    entry.body.dataset.rows = view.rows.length;
    return;
  }
  const { charts: list } = await getJson(`${base}/chart${query}`);
  if (!list.length) { entry.body.replaceChildren(el("p", { class: "empty" }, "no data")); entry.plot?.destroy(); entry.plot = null; return; }
  if (p.kind === "value") {
    const c = list[0];
    const sums = c.kind === "time" ? summedPerWindow(c).filter(v => v != null) : [c.series[0].values.reduce((a, v) => a + (v ?? 0), 0)];
    const value = sums.length ? sums[sums.length - 1] : null;
    const over = p.thresholds.filter(t => value != null && value >= t.value).pop();
    const big = el("div", { class: "panel-number", "data-value": value ?? "" }, value == null ? "no data" : numberText(value));
    if (over) big.style.color = over.color || "#c4443b";
    entry.body.replaceChildren(big, el("div", { class: "hint" }, c.value + (c.kind === "time" ? ", latest window" : ", total")));
    return;
  }
  panelChart(entry, p, list[0]);
}

async function refreshPanels(section) {
  const { panels: all, errors } = await getJson("/api/panels");
  const only = section.dataset.pipeline;
  const list = all.filter(p => !only || p.pipeline === only);
  const errorList = document.getElementById("panel-errors");
  errorList.replaceChildren(...errors.map(e => el("li", { "data-file": e.file }, `${e.file}:${e.line}: ${e.message}`)));
  const holder = document.getElementById("panel-list");
  // Shown before drawing: a chart takes its width from the section.
  section.hidden = list.length === 0 && errors.length === 0;
  const wanted = new Set(list.map(p => p.file));
  for (const [file, entry] of panels) {
    if (wanted.has(file)) continue;
    entry.plot?.destroy();
    entry.node.remove();
    panels.delete(file);
  }
  for (const p of list) {
    const signature = JSON.stringify(p);
    let entry = panels.get(p.file);
    if (entry && entry.signature !== signature) {
      entry.plot?.destroy();
      entry.node.remove();
      entry = null;
    }
    if (!entry) {
      const node = el("figure", { class: "panel panel-" + p.kind, "data-file": p.file, "data-pipeline": p.pipeline });
      const caption = el("figcaption");
      caption.append(el("span", { class: "panel-title" }, p.title), " ", el("a", { href: "/pipelines/" + encodeURIComponent(p.pipeline), class: "hint" }, p.pipeline));
      const body = el("div", { class: "panel-body" });
      node.append(caption, body);
      entry = { signature, node, body, plot: null };
      panels.set(p.file, entry);
    }
    holder.append(entry.node); // in file-name order
    try {
      await drawPanel(entry, p);
      entry.node.removeAttribute("title");
    } catch (e) {
      entry.node.title = "could not read the data: " + e.message;
    }
  }
}

// ---- the refresh loop ----
let timer = null;
async function refresh() {
  try {
    const overview = document.getElementById("pipelines");
    const pipeline = document.getElementById("pipeline");
    const bad = document.getElementById("bad-records");
    const panelSection = document.getElementById("panels");
    if (panelSection) await refreshPanels(panelSection);
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
// The time zone picker: UTC, the browser's zone, or any other; kept in a cookie.
function setUpZonePicker(select) {
  const browser = Intl.DateTimeFormat().resolvedOptions().timeZone;
  const zones = ["UTC", browser, ...(Intl.supportedValuesOf ? Intl.supportedValuesOf("timeZone") : [])];
  select.replaceChildren(...[...new Set(zones)].map(z => {
    const option = el("option", { value: z }, z === browser && z !== "UTC" ? `${z} (browser)` : z);
    option.selected = z === ZONE;
    return option;
  }));
  select.addEventListener("change", () => {
    document.cookie = `tz=${encodeURIComponent(select.value)}; path=/; max-age=31536000; SameSite=Lax`;
    // A fixed range was typed in the old zone: fall back to the default range.
    const url = new URL(location.href);
    for (const key of ["tz", "from", "to"]) url.searchParams.delete(key);
    location.href = url.href;
  });
}

// Silences: created and expired through the JSON API, then the page is read again.
async function postJson(url, body) {
  const response = await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  if (!response.ok) throw new Error((await response.json().catch(() => ({}))).error || response.statusText);
}
function setUpSilences(form) {
  const error = document.getElementById("silence-error");
  form.addEventListener("submit", async event => {
    event.preventDefault();
    const data = new FormData(form);
    try {
      await postJson("/api/silences", { matchers: data.get("matchers"), minutes: Number(data.get("minutes")), comment: data.get("comment") });
      location.reload();
    } catch (e) {
      error.textContent = e.message;
      error.hidden = false;
    }
  });
  for (const button of document.querySelectorAll("#silences button.expire")) {
    button.addEventListener("click", async () => {
      await postJson(`/api/silences/${encodeURIComponent(button.dataset.silence)}/expire`, {});
      location.reload();
    });
  }
}

document.addEventListener("DOMContentLoaded", () => {
  markUpdated();
  const silenceForm = document.getElementById("new-silence");
  if (silenceForm) setUpSilences(silenceForm);
  const zone = document.getElementById("zone");
  if (zone) setUpZonePicker(zone);
  const toggle = document.getElementById("show-id");
  if (toggle) {
    showId(toggle.checked);
    toggle.addEventListener("change", () => showId(toggle.checked));
  }
  const pipeline = document.getElementById("pipeline");
  if (pipeline) refreshPipeline(pipeline).catch(() => {});
  // The overview's rates, watermark delays and health charts at once, not a refresh later.
  const overview = document.getElementById("pipelines");
  if (overview) refreshOverview(overview).catch(() => {});
  schedule();
});
