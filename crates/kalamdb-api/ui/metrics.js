// The metrics page: a few charts over the figures of GET /metrics, read through
// `system.stats` (the same samples, docs/protocol.md §7.3) every two seconds while the page is
// open. Counters are shown as rates.

import * as api from "./api.js";
import { h, fill, svg } from "./dom.js";

const EVERY_MS = 2000;
const POINTS = 90;
const MIB = 1024 * 1024;

const CHARTS = [
  { title: "HTTP requests / s", metric: "kalamdb_http_requests_total", rate: true },
  { title: "SQL statements / s", metric: "kalamdb_sql_statements_total", rate: true },
  { title: "Rows written / s", metric: "kalamdb_rows_written_total", rate: true },
  { title: "Live deliveries / s", metric: "kalamdb_live_deliveries_total", rate: true },
  { title: "CPU %", metric: "kalamdb_process_cpu_seconds_total", rate: true, scale: 100 },
  { title: "Resident memory, MiB", metric: "kalamdb_process_resident_memory_bytes", scale: 1 / MIB },
  { title: "WebSocket connections", metric: "kalamdb_websocket_connections" },
  { title: "Live subscriptions", metric: "kalamdb_live_subscriptions" },
  { title: "RocksDB memtables, MiB", metric: "kalamdb_rocksdb_memtable_bytes", scale: 1 / MIB },
];

let timer = null;

export function leave() {
  clearInterval(timer);
  timer = null;
}

/** Sums the samples of `metric` over all its label sets. */
function total(samples, metric) {
  let sum = null;
  for (const [name, value] of samples) {
    if (name === metric || name.startsWith(`${metric}{`)) sum = (sum || 0) + Number(value);
  }
  return sum;
}

function draw(chart, points) {
  const width = 300;
  const height = 90;
  const max = Math.max(1e-9, ...points);
  const step = width / (POINTS - 1);
  const offset = POINTS - points.length;
  const xy = points.map((v, i) => `${((offset + i) * step).toFixed(1)},${(height - 4 - (v / max) * (height - 8)).toFixed(1)}`);
  const plot = svg("svg", { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", role: "img", "aria-label": chart.title });
  if (xy.length > 1) {
    const first = ((offset) * step).toFixed(1);
    plot.append(svg("polygon", { class: "area", points: `${first},${height} ${xy.join(" ")} ${width},${height}` }));
    plot.append(svg("polyline", { points: xy.join(" ") }));
  }
  const last = points.length ? points[points.length - 1] : null;
  fill(chart.node, h("h3", chart.title), h("div.now", last === null ? "–" : format(last)), plot, h("div.muted", `max ${format(max)} over ${Math.round((points.length * EVERY_MS) / 1000)} s`));
}

const format = (v) => (Math.abs(v) >= 100 ? Math.round(v).toLocaleString() : v.toFixed(v === Math.round(v) ? 0 : 2));

export function view() {
  leave();
  const state = CHARTS.map((c) => ({ ...c, node: h("div.panel.chart"), points: [], previous: null }));
  const status = h("span.muted");
  let lastAt = null;
  const sample = async () => {
    let samples;
    try {
      samples = (await api.rows("SELECT metric_name, metric_value FROM system.stats")).map((r) => [r.metric_name, r.metric_value]);
    } catch (e) {
      fill(status, h("span.error", String(e.message || e)));
      return;
    }
    const now = performance.now();
    const seconds = lastAt === null ? null : (now - lastAt) / 1000;
    lastAt = now;
    for (const c of state) {
      const value = total(samples, c.metric);
      let shown = value;
      if (c.rate) {
        shown = value === null || c.previous === null || seconds === null ? null : Math.max(0, (value - c.previous) / seconds);
        c.previous = value;
      }
      if (shown !== null) {
        c.points.push(shown * (c.scale || 1));
        if (c.points.length > POINTS) c.points.shift();
      }
      draw(c, c.points);
    }
    fill(status, `sampled ${new Date().toLocaleTimeString()} · ${samples.length} samples`);
  };
  for (const c of state) draw(c, c.points);
  sample();
  timer = setInterval(sample, EVERY_MS);
  return h("div", h("div.row.spread", h("h2", "Metrics"), status), h("div.charts", state.map((c) => c.node)),
    h("p.muted", "Scrape GET /metrics with Prometheus for history; these charts keep the last three minutes in this tab."));
}
