// Result grids: an SQL envelope (docs/protocol.md §4.3) or plain row objects as tables.

import { h } from "./dom.js";

const MAX_SHOWN = 2000;

/** One cell: NULL shown as such, objects as JSON, long values with a tooltip. */
export const cell = (v) => {
  if (v === null || v === undefined) return h("td.null", "NULL");
  const text = typeof v === "object" ? JSON.stringify(v) : String(v);
  return h("td", { title: text.length > 60 ? text : null }, text);
};

/** A table over `columns` (names, or `{name, data_type}`) and positional `rows`. */
export function table(columns, rows) {
  const type = (t) => (typeof t === "string" ? t : JSON.stringify(t));
  const head = h("tr", columns.map((c) => (typeof c === "string" ? h("th", c) : h("th", c.name, h("small", type(c.data_type))))));
  const body = rows.slice(0, MAX_SHOWN).map((r) => h("tr", r.map(cell)));
  return h("div.grid-wrap", h("table.grid", h("thead", head), h("tbody", body)));
}

/** A table over row objects, with the given column order. */
export function objects(columns, items) {
  return table(columns, items.map((o) => columns.map((c) => o[c])));
}

/** Renders a whole SQL envelope: every statement's grid or message, or the error. */
export function envelope(env) {
  if (env.status !== "success") {
    const e = env.error || {};
    return h("div.panel", h("div.error", h("strong", e.code || "ERROR"), " ", e.message || ""), e.details ? h("div.muted", e.details) : null);
  }
  const parts = env.results.map((r, i) => {
    const meta = [];
    if (env.results.length > 1) meta.push(`Statement ${i + 1}`);
    meta.push(r.schema ? `${r.row_count} row${r.row_count === 1 ? "" : "s"}` : r.message || `${r.row_count} row(s) affected`);
    if (r.rows && r.rows.length > MAX_SHOWN) meta.push(`first ${MAX_SHOWN} shown`);
    if (r.transaction_id) meta.push(`transaction ${r.transaction_id}`);
    return h("div", h("div.result-meta", meta.join(" · ")), r.schema ? table(r.schema, r.rows || []) : null);
  });
  return h("div.panel.results", parts, h("div.result-meta", `${env.took} ms`));
}
