// The schema browser: namespaces, their tables (with kind) and views, and each one's columns,
// from GET /v1/api/schema (docs/protocol.md §7.2).

import * as api from "./api.js";
import { h, fill } from "./dom.js";
import * as grid from "./grid.js";
import { prefill } from "./sqlview.js";

export function view() {
  const tree = h("div.tree", h("p.muted", "Loading…"));
  const detail = h("div", h("p.muted", "Pick a table or a view."));
  let active = null;

  const show = (ns, item, kind, link) => {
    if (active) active.classList.remove("active");
    active = link;
    link.classList.add("active");
    const name = `${ns.name}.${item.name}`;
    const facts = [];
    if (kind !== "view") facts.push(`${item.kind.toUpperCase()} table`);
    else facts.push("view");
    if (item.access_level) facts.push(`access ${item.access_level}`);
    if (item.ttl_seconds) facts.push(`TTL ${item.ttl_seconds} s`);
    if (item.primary_key && item.primary_key.length) facts.push(`primary key (${item.primary_key.join(", ")})`);
    const cols = item.columns.map((c) => [c.name, c.type, c.nullable ? "yes" : "no", c.primary_key ? "yes" : "", c.default ?? null]);
    fill(detail, h("div.panel",
      h("div.row.spread", h("h2", name), h("a", { href: "#sql", onclick: () => prefill(`SELECT * FROM ${name} LIMIT 100`) }, "Query it")),
      h("p.muted", facts.join(" · ")),
      grid.table(["column", "type", "nullable", "primary key", "default"], cols)));
  };

  api.schema().then((doc) => {
    if (!doc.namespaces.length) {
      fill(tree, h("p.muted", "No namespaces yet: CREATE NAMESPACE app"));
      return;
    }
    fill(tree, h("ul", doc.namespaces.map((ns) => h("li",
      h("span.ns", ns.name),
      h("ul",
        ns.tables.map((t) => {
          const link = h("a", { onclick: () => show(ns, t, t.kind, link) }, t.name);
          return h("li", link, h(`span.badge.${t.kind}`, t.kind));
        }),
        (ns.views || []).map((v) => {
          const link = h("a", { onclick: () => show(ns, v, "view", link) }, v.name);
          return h("li", link, h("span.badge.view", "view"));
        }))))));
  }, (e) => fill(tree, h("p.error", String(e.message || e))));

  return h("div.schema-layout", h("div.panel", h("h2", "Schema"), tree), detail);
}
