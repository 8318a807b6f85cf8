// The live page: subscribes to a query over the WebSocket and shows its rows as they change,
// with a log of the changes (docs/protocol.md §6).

import * as api from "./api.js";
import { h, fill } from "./dom.js";
import { editor } from "./highlight.js";
import { cell } from "./grid.js";

let query = "";
let current = null; // the open subscription, closed when the page is left
let generation = 0; // bumped by every start and leave: a subscription still opening for an
// older one is closed as soon as it opens

export function leave() {
  generation += 1;
  if (current) current.close();
  current = null;
}

export function view() {
  leave();
  const dot = h("span.status-dot");
  const state = h("span#live-state", "not subscribed");
  const counts = h("span.muted");
  const body = h("div#live-rows", h("p.muted", "Rows of the query appear here and change as writes commit."));
  const log = h("div.live-log");
  const ed = editor(() => start());
  ed.set(query);
  ed.element.classList.add("short");
  ed.textarea.addEventListener("input", () => { query = ed.get(); });

  let columns = [];
  let keyColumns = [];
  let changes = 0;
  const rows = new Map(); // key -> {values, tr}

  const keyOf = (r) => JSON.stringify(keyColumns.length ? keyColumns.map((c) => r[c]) : Object.entries(r).filter(([k]) => k !== "_seq"));
  const tbody = h("tbody");
  const setState = (text, cls) => {
    fill(state, text);
    dot.className = `status-dot ${cls || ""}`;
  };
  const note = (text) => {
    log.prepend(h("div", `${new Date().toLocaleTimeString()}  ${text}`));
    while (log.childNodes.length > 200) log.lastChild.remove();
  };
  const renderRow = (values, flash) => {
    const tr = h("tr", [...columns, "_seq"].map((c) => cell(values[c])));
    if (flash) {
      tr.classList.add("flash");
      setTimeout(() => tr.classList.remove("flash"), 1500);
    }
    return tr;
  };
  const upsert = (values, flash) => {
    const key = keyOf(values);
    const old = rows.get(key);
    const merged = old ? { ...old.values, ...values } : values;
    const tr = renderRow(merged, flash);
    if (old) old.tr.replaceWith(tr);
    else tbody.append(tr);
    rows.set(key, { values: merged, tr });
  };
  const remove = (values) => {
    const key = keyOf(values);
    const old = rows.get(key);
    if (!old) return;
    rows.delete(key);
    old.tr.classList.add("gone");
    setTimeout(() => old.tr.remove(), 1200);
  };
  const showCounts = () => fill(counts, `${rows.size} row${rows.size === 1 ? "" : "s"} · ${changes} change${changes === 1 ? "" : "s"}`);

  const onMessage = (m) => {
    switch (m.type) {
      case "subscription_ack":
        columns = m.schema.map((c) => c.name);
        keyColumns = m.schema.filter((c) => (c.flags || []).includes("pk")).map((c) => c.name);
        fill(body, h("div.grid-wrap", h("table.grid", h("thead", h("tr", [...columns, "_seq"].map((c) => h("th", c)))), tbody)));
        setState("loading", "on");
        break;
      case "initial_data_batch":
        for (const r of m.rows || []) upsert(r, false);
        if (m.batch_control && m.batch_control.status === "ready") setState("live", "on");
        break;
      case "change":
        changes += 1;
        setState("live", "on");
        if (m.change_type === "delete") for (const r of m.old_values || []) remove(r);
        else if (m.change_type === "update") {
          (m.rows || []).forEach((r, i) => {
            // old_values hold the key and the changed columns: with the new row's other
            // columns they are the row as it was.
            const old = (m.old_values || [])[i];
            const before = old && { ...r, ...old };
            if (before && keyOf(before) !== keyOf(r)) remove(before);
            upsert(r, true);
          });
        } else for (const r of m.rows || []) upsert(r, true);
        note(`${m.change_type} · ${(m.rows || m.old_values || []).length} row(s)`);
        break;
      case "error":
        setState(`${m.code}: ${m.message}`, "bad");
        note(`error ${m.code}: ${m.message}`);
        break;
      case "closed":
        if (current) setState(m.reason, "bad");
        break;
      default:
    }
    showCounts();
  };

  async function start() {
    leave();
    query = ed.get().trim();
    if (!query) return;
    rows.clear();
    tbody.replaceChildren();
    changes = 0;
    fill(log);
    setState("connecting");
    const mine = generation;
    try {
      const handle = await api.subscribe(query, (m) => mine === generation && onMessage(m));
      if (mine === generation) current = handle;
      else handle.close();
    } catch (e) {
      setState(String(e.message || e), "bad");
    }
  }
  const stop = () => { leave(); setState("not subscribed"); };

  return h("div",
    h("div.panel",
      h("h2", "Live query"),
      h("p.muted", "A SELECT over one table, e.g. SELECT * FROM app.messages WHERE room = 'general'. Rows you may read only."),
      ed.element,
      h("div.row.gap-top", h("button.primary#subscribe", { onclick: start }, "Subscribe"), h("button", { onclick: stop }, "Stop"), dot, state, counts)),
    h("div.panel", body),
    h("div.panel", h("h2", "Changes"), log));
}
