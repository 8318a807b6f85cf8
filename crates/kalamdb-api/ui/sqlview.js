// The SQL page: a highlighted editor, the statement history (kept in this browser) and the
// results of the last run.

import * as api from "./api.js";
import { h, fill } from "./dom.js";
import { editor } from "./highlight.js";
import * as grid from "./grid.js";

const HISTORY_MAX = 50;
// Statements that carry secrets are run but never kept.
const SECRET = /\b(PASSWORD|CREDENTIALS|SECRET|TOKEN)\b/i;

/** Each user's history is their own (several people may share a browser). */
const historyKey = () => `kalamdb.console.history.${api.session ? api.session.user.id : ""}`;

const loadHistory = () => {
  try { return JSON.parse(localStorage.getItem(historyKey())) || []; } catch { return []; }
};

function remember(text) {
  if (SECRET.test(text)) return;
  const list = [text, ...loadHistory().filter((t) => t !== text)].slice(0, HISTORY_MAX);
  localStorage.setItem(historyKey(), JSON.stringify(list));
}

let draft = "SELECT * FROM system.namespaces";

/** Opens the SQL page with `text` in the editor (used by the schema browser). */
export function prefill(text) { draft = text; }

export function view() {
  const results = h("div#results");
  const history = h("div.history");
  const status = h("span.muted");
  const run = async (text) => {
    if (!text.trim()) return;
    remember(text.trim());
    showHistory();
    runButton.disabled = true;
    fill(status, "running…");
    const env = await api.sql(text);
    runButton.disabled = false;
    fill(status, env.status === "success" ? "" : "failed");
    fill(results, grid.envelope(env));
  };
  const ed = editor(run);
  ed.textarea.addEventListener("input", () => { draft = ed.get(); });
  const runButton = h("button.primary#run", { onclick: () => run(ed.get()) }, "Run");
  const showHistory = () => fill(history, loadHistory().map((t) => h("div", { title: t, onclick: () => { ed.set(t); draft = t; ed.textarea.focus(); } }, t)));
  showHistory();
  ed.set(draft);
  queueMicrotask(() => ed.textarea.focus());
  return h("div.sql-layout",
    h("div",
      h("div.panel", ed.element, h("div.row.spread.gap-top",
        h("div.row", runButton, status), h("span.muted", "Ctrl+Enter runs; several statements separated by ; run in order"))),
      results),
    h("div.panel", h("h2", "History"), history,
      h("div.gap-top", h("button", { onclick: () => { localStorage.removeItem(historyKey()); showHistory(); } }, "Clear"))));
}
