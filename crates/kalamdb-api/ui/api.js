// The console's only link to the server: login and token refresh, SQL over HTTP, schema
// discovery, and live queries over the WebSocket (docs/protocol.md §3, §4, §6, §7.2).
// The access token lives in memory only; a reload gets a new one from the HttpOnly refresh
// cookie the login set.

let token = null;
let expiresAt = 0;
let refreshing = null;

/** @typedef {{id: string, role: string, email: string|null}} User */
/** @type {{user: User, admin: boolean} | null} */
export let session = null;

/** Called when the session ends under the page (refresh refused); set by the shell. */
export let onExpired = () => {};
export function whenExpired(f) { onExpired = f; }

function adopt(body) {
  if (session && session.user.id !== body.user.id) {
    // Another tab logged in as someone else: start over as that user.
    location.reload();
  }
  token = body.access_token;
  expiresAt = Date.parse(body.expires_at) || 0;
  session = { user: body.user, admin: Boolean(body.admin_ui_access) };
  return session;
}

async function errorOf(response) {
  try {
    const body = await response.json();
    if (body.error && typeof body.error === "object") return `${body.error.code}: ${body.error.message}`;
    return body.message || body.error || `HTTP ${response.status}`;
  } catch {
    return `HTTP ${response.status}`;
  }
}

/** Logs in with a user name and password; throws the server's message on failure. */
export async function login(user, password) {
  const r = await fetch("../v1/api/auth/login", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ user, password }),
  });
  if (!r.ok) throw new Error(await errorOf(r));
  return adopt(await r.json());
}

/** A new token pair from the refresh cookie; null when there is no valid one. */
export async function resume() {
  if (!refreshing) {
    refreshing = (async () => {
      const r = await fetch("../v1/api/auth/refresh", { method: "POST" });
      return r.ok ? adopt(await r.json()) : null;
    })().finally(() => { refreshing = null; });
  }
  return refreshing;
}

export async function logout() {
  token = null;
  session = null;
  await fetch("../v1/api/auth/logout", { method: "POST" }).catch(() => {});
}

async function bearer() {
  if (token && Date.now() > expiresAt - 30_000 && !(await resume())) expire();
  if (!token) throw new Error("Not logged in");
  return token;
}

async function authorized(url, init = {}) {
  const send = async () => fetch(url, { ...init, headers: { ...(init.headers || {}), Authorization: `Bearer ${await bearer()}` } });
  let r = await send();
  if (r.status === 401) {
    if (await resume()) r = await send();
    else expire();
  }
  return r;
}

function expire() {
  const had = session !== null;
  token = null;
  session = null;
  if (had) onExpired();
}

/**
 * Runs SQL; answers the envelope of §4.3/§4.4 (`status`, `results`, `took`, `error`).
 * Transport failures become an error envelope too, so callers handle one shape.
 */
export async function sql(text) {
  try {
    const r = await authorized("../v1/api/sql", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ sql: text }),
    });
    const body = await r.json().catch(() => null);
    if (body && body.status) return body;
    return { status: "error", results: [], error: { code: `HTTP_${r.status}`, message: await errorOf(r) } };
  } catch (e) {
    return { status: "error", results: [], error: { code: "NETWORK", message: String(e.message || e) } };
  }
}

/** Runs one query and answers its rows as objects keyed by column name; throws on error. */
export async function rows(text) {
  const env = await sql(text);
  if (env.status !== "success") throw new Error(`${env.error.code}: ${env.error.message}`);
  const result = env.results[0] || {};
  const names = (result.schema || []).map((c) => c.name);
  return (result.rows || []).map((r) => Object.fromEntries(names.map((n, i) => [n, r[i]])));
}

/** The caller's queryable schema (§7.2). */
export async function schema() {
  const r = await authorized("../v1/api/schema");
  if (!r.ok) throw new Error(await errorOf(r));
  return r.json();
}

/** Quotes a string as an SQL literal. */
export const literal = (s) => `'${String(s).replaceAll("'", "''")}'`;

/**
 * Subscribes to a live query. `on` receives `{type, ...}` messages of §6.5 plus
 * `{type: "closed", reason}`. Answers a handle whose `close()` ends it.
 */
export async function subscribe(query, on) {
  const auth = await bearer(); // before the socket opens: its open event is not missed
  const url = new URL("../v1/ws?compress=false", location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(url);
  let closed = false;
  const finish = (reason) => {
    if (closed) return;
    closed = true;
    on({ type: "closed", reason });
  };
  ws.onopen = () => ws.send(JSON.stringify({ type: "authenticate", method: "jwt", token: auth, protocol: { serialization: "json", compression: "none" } }));
  ws.onerror = () => finish("connection error");
  ws.onclose = (e) => finish(e.reason || `closed (${e.code})`);
  ws.onmessage = (e) => {
    const m = JSON.parse(e.data);
    if (m.type === "auth_success") {
      ws.send(JSON.stringify({ type: "subscribe", subscription: { id: "console", sql: query, options: { batch_size: 500 } } }));
      return;
    }
    if (m.type === "initial_data_batch" && m.batch_control && m.batch_control.has_more) {
      ws.send(JSON.stringify({ type: "next_batch", subscription_id: "console" }));
    }
    on(m);
  };
  const ping = setInterval(() => ws.readyState === WebSocket.OPEN && ws.send(JSON.stringify({ type: "ping" })), 20_000);
  return {
    close() {
      clearInterval(ping);
      finish("unsubscribed");
      ws.close(1000);
    },
  };
}
