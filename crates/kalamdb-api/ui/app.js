// The KalamDB web console (served at /ui by the server, same origin, no build step): login,
// then pages picked by the URL hash.

import * as api from "./api.js";
import { h, fill } from "./dom.js";
import * as sqlview from "./sqlview.js";
import * as live from "./live.js";
import * as schema from "./schema.js";
import * as admin from "./admin.js";
import * as metrics from "./metrics.js";

const PAGES = [
  { id: "sql", title: "SQL", view: sqlview.view },
  { id: "live", title: "Live", view: live.view },
  { id: "schema", title: "Schema", view: schema.view },
  { id: "users", title: "Users", view: admin.users, admin: true },
  { id: "jobs", title: "Jobs", view: admin.jobs, admin: true },
  { id: "storages", title: "Storages", view: admin.storages, admin: true },
  { id: "subscriptions", title: "Subscriptions", view: admin.subscriptions, admin: true },
  { id: "metrics", title: "Metrics", view: metrics.view, admin: true },
];

const root = document.getElementById("app");

function leavePage() {
  live.leave();
  admin.leave();
  metrics.leave();
}

function loginForm(message) {
  const user = h("input#login-user", { autocomplete: "username", value: "root" });
  const password = h("input#login-password", { type: "password", autocomplete: "current-password" });
  const error = h("div.error#login-error", message || "");
  const submit = async (e) => {
    e.preventDefault();
    fill(error);
    try {
      await api.login(user.value, password.value);
      shell();
    } catch (err) {
      fill(error, String(err.message || err));
    }
  };
  fill(root, h("form.login", { onsubmit: submit },
    h("h1", "KalamDB"),
    h("label", { htmlFor: "login-user" }, "User"), user,
    h("label", { htmlFor: "login-password" }, "Password"), password,
    h("button.primary#login-submit", { type: "submit" }, "Log in"),
    error));
  password.focus();
}

function shell() {
  const { user, admin: isAdmin } = api.session;
  const pages = PAGES.filter((p) => !p.admin || isAdmin);
  const links = pages.map((p) => h("a", { href: `#${p.id}`, "data-page": p.id }, p.title));
  const content = h("main");
  const out = async () => {
    leavePage();
    await api.logout();
    location.hash = "";
    loginForm();
  };
  fill(root,
    h("header.top", h("span.brand", "KalamDB"), h("nav", links),
      h("span.who", `${user.id} · ${user.role}`, h("button", { onclick: out }, "Log out"))),
    content);
  const route = () => {
    if (!api.session) return;
    const id = location.hash.slice(1) || "sql";
    const page = pages.find((p) => p.id === id) || pages[0];
    for (const a of links) a.classList.toggle("active", a.dataset.page === page.id);
    leavePage();
    fill(content, page.view());
  };
  window.onhashchange = route;
  route();
}

api.whenExpired(() => {
  leavePage();
  loginForm("Your session ended: log in again.");
});

(async () => {
  const resumed = await api.resume().catch(() => null);
  if (resumed) shell();
  else loginForm();
})();
