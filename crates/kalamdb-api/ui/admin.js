// Operator pages over the system tables: users and roles, jobs, storages and live
// subscriptions. Each is a query of system.* (admins only) shown as a grid, refreshed on a
// timer, with the statements an operator runs from there (create/alter/drop user, kill a
// subscription).

import * as api from "./api.js";
import { h, fill } from "./dom.js";
import { cell } from "./grid.js";

const timers = new Set();

/** Stops the refresh timers of the page being left. */
export function leave() {
  for (const t of timers) clearInterval(t);
  timers.clear();
}

/**
 * A grid of `query`'s rows with `columns`, refreshed every `everyMs`; `actions(row, reload)`
 * answers the cells of an extra last column.
 */
function systemGrid({ query, columns, everyMs = 5000, actions }) {
  const holder = h("div", h("p.muted", "Loading…"));
  const when = h("span.muted");
  const reload = async () => {
    try {
      const items = await api.rows(query);
      const head = h("tr", columns.map((c) => h("th", c)), actions ? h("th", "") : null);
      const body = items.map((r) => h("tr",
        columns.map((c) => cell(r[c])),
        actions ? h("td", actions(r, reload)) : null));
      fill(holder, items.length ? h("div.grid-wrap", h("table.grid", h("thead", head), h("tbody", body))) : h("p.muted", "None."));
      fill(when, `${items.length} · updated ${new Date().toLocaleTimeString()}`);
    } catch (e) {
      fill(holder, h("p.error", String(e.message || e)));
    }
  };
  reload();
  if (everyMs) timers.add(setInterval(reload, everyMs));
  return { element: h("div", holder, h("div.result-meta", when)), reload };
}

/** Runs a statement and shows its outcome in `out`; answers whether it succeeded. */
async function act(statement, out) {
  const env = await api.sql(statement);
  if (env.status === "success") {
    fill(out, h("span.ok", env.results[0] ? env.results[0].message || "Done" : "Done"));
    return true;
  }
  fill(out, h("span.error", `${env.error.code}: ${env.error.message}`));
  return false;
}

const ROLES = [
  ["user", "reads and writes its own rows of USER tables, and SHARED tables open to it"],
  ["service", "a backend: may act for users with EXECUTE AS, and publish to topics"],
  ["dba", "administers the database: users, tables, storages, jobs, system tables"],
  ["system", "the built-in superuser (root)"],
];

export function users() {
  const out = h("span");
  const listing = systemGrid({
    query: "SELECT user_id, role, email, auth_type, last_login_at, created_at FROM system.users WHERE deleted_at IS NULL ORDER BY user_id",
    columns: ["user_id", "role", "email", "auth_type", "last_login_at", "created_at"],
    everyMs: 0,
    actions: (u, reload) => {
      if (u.user_id === api.session.user.id) return h("span.muted", "you");
      const role = h("select", ROLES.map(([r]) => h("option", { value: r, selected: r === u.role }, r)));
      role.addEventListener("change", async () => {
        if (await act(`ALTER USER ${api.literal(u.user_id)} SET ROLE ${api.literal(role.value)}`, out)) reload();
      });
      const drop = h("button.danger", {
        onclick: async () => {
          if (confirm(`Drop user ${u.user_id}?`) && (await act(`DROP USER ${api.literal(u.user_id)}`, out))) reload();
        },
      }, "Drop");
      return h("div.row", role, drop);
    },
  });
  const name = h("input", { placeholder: "name", "aria-label": "user name" });
  const password = h("input", { type: "password", placeholder: "password", autocomplete: "new-password", "aria-label": "password" });
  const role = h("select", ROLES.map(([r]) => h("option", { value: r }, r)));
  const create = async (e) => {
    e.preventDefault();
    const ok = await act(`CREATE USER ${api.literal(name.value)} WITH PASSWORD ${api.literal(password.value)} ROLE ${api.literal(role.value)}`, out);
    if (ok) {
      name.value = "";
      password.value = "";
      listing.reload();
    }
  };
  return h("div",
    h("div.panel", h("h2", "Users"), listing.element),
    h("div.panel", h("h2", "New user"), h("form.row", { onsubmit: create }, name, password, role, h("button.primary", { type: "submit" }, "Create")), h("div.gap-top", out)),
    h("div.panel", h("h2", "Roles"), h("div.grid-wrap", h("table.grid", h("tbody", ROLES.map(([r, what]) => h("tr", h("td", r), h("td", what))))))));
}

export function jobs() {
  const listing = systemGrid({
    query: "SELECT job_id, job_type, target, status, created_by, created_at, finished_at, rows, bytes, message FROM system.jobs ORDER BY created_at DESC LIMIT 200",
    columns: ["job_id", "job_type", "target", "status", "created_by", "created_at", "finished_at", "rows", "bytes", "message"],
  });
  return h("div.panel", h("div.row.spread", h("h2", "Jobs"), h("button", { onclick: listing.reload }, "Refresh")), listing.element);
}

export function storages() {
  const listing = systemGrid({
    query: "SELECT storage_id, storage_name, storage_type, base_directory, description, created_at FROM system.storages ORDER BY storage_id",
    columns: ["storage_id", "storage_name", "storage_type", "base_directory", "description", "created_at"],
    everyMs: 0,
  });
  return h("div.panel", h("h2", "Storages"), listing.element);
}

export function subscriptions() {
  const out = h("span");
  const listing = systemGrid({
    query: "SELECT live_id, user_id, namespace_id, table_name, query, status, created_at, changes, node_id FROM system.live ORDER BY created_at DESC",
    columns: ["live_id", "user_id", "namespace_id", "table_name", "query", "status", "created_at", "changes", "node_id"],
    actions: (s, reload) => h("button.danger", {
      onclick: async () => {
        if (await act(`KILL LIVE QUERY ${api.literal(s.live_id)}`, out)) reload();
      },
    }, "Kill"),
  });
  return h("div.panel", h("div.row.spread", h("h2", "Live subscriptions"), h("button", { onclick: listing.reload }, "Refresh")), listing.element, out);
}
