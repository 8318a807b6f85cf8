// SQL syntax highlighting for the editor: a small tokenizer, painted into a <pre> that sits
// under a transparent <textarea>.

import { h, fill } from "./dom.js";

const KEYWORDS = new Set(`
ADD ALL ALTER AND ANY AS ASC BACKUP BEGIN BETWEEN BY CASCADE CASE CAST CLEAR COLUMN COMMIT
CONSUME CREATE CROSS DATA DATABASE DEFAULT DELETE DESC DESCRIBE DISTINCT DROP ELSE END EXECUTE
EXISTS EXPLAIN EXPORT FALSE FILTER FLUSH FOR FROM FULL GROUP HAVING IF ILIKE IN INNER INSERT
INTERVAL INTO IS JOIN JOB KEY KILL LEFT LIKE LIMIT LIVE NAMESPACE NOT NULL OFFSET ON OR ORDER
OUTER OVER PARTITION PASSWORD PRIMARY PUBLISH QUERY RENAME RETURNING RIGHT ROLE ROLLBACK SELECT
SET SHARED SHOW STORAGE STREAM SUBSCRIBE TABLE TABLES THEN TO TOPIC TRANSACTION TRUE TTL UNION
UPDATE USE USER USING VALUES VIEW WHEN WHERE WITH`.trim().split(/\s+/));

const TYPES = new Set(`
BIGINT BLOB BOOLEAN BOOL BYTES CHAR DATE DATETIME DECIMAL DOUBLE EMBEDDING FILE FLOAT INT
INTEGER JSON NUMERIC REAL SMALLINT TEXT TIME TIMESTAMP TINYINT UUID VARCHAR`.trim().split(/\s+/));

const TOKEN = /(--[^\n]*|\/\*[\s\S]*?(?:\*\/|$))|('(?:[^']|'')*'?)|("(?:[^"]|"")*"?)|(\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)|([A-Za-z_][A-Za-z0-9_$]*)(\s*\()?|(\s+|[^\sA-Za-z0-9_'"-]+|-)/gy;

/** Splits SQL into `[kind, text]` pairs; kinds: kw, ty, fn, str, num, cmt, or "" (plain). */
export function tokenize(text) {
  const out = [];
  TOKEN.lastIndex = 0;
  let m;
  while (TOKEN.lastIndex < text.length && (m = TOKEN.exec(text))) {
    if (m[1]) out.push(["cmt", m[1]]);
    else if (m[2]) out.push(["str", m[2]]);
    else if (m[3]) out.push(["", m[3]]);
    else if (m[4]) out.push(["num", m[4]]);
    else if (m[5]) {
      const upper = m[5].toUpperCase();
      const kind = m[6] ? "fn" : KEYWORDS.has(upper) ? "kw" : TYPES.has(upper) ? "ty" : "";
      out.push([kind, m[5]]);
      if (m[6]) out.push(["", m[6]]);
    } else out.push(["", m[7]]);
  }
  if (TOKEN.lastIndex < text.length) out.push(["", text.slice(TOKEN.lastIndex)]);
  return out;
}

/**
 * A highlighted SQL editor. `onRun` is called with the text on Ctrl/Cmd+Enter. Answers
 * `{element, textarea, get(), set(text)}`.
 */
export function editor(onRun) {
  const pre = h("pre", { "aria-hidden": "true" });
  const textarea = h("textarea", { spellcheck: false, autocomplete: "off", "aria-label": "SQL" });
  const paint = () => {
    const text = textarea.value;
    fill(pre, tokenize(text).map(([kind, t]) => (kind ? h(`span.tok-${kind}`, t) : t)), text.endsWith("\n") ? " " : "");
    pre.scrollTop = textarea.scrollTop;
  };
  textarea.addEventListener("input", paint);
  textarea.addEventListener("scroll", () => { pre.scrollTop = textarea.scrollTop; pre.scrollLeft = textarea.scrollLeft; });
  textarea.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      onRun(textarea.value);
    } else if (e.key === "Tab" && !e.shiftKey) {
      e.preventDefault();
      textarea.setRangeText("  ", textarea.selectionStart, textarea.selectionEnd, "end");
      paint();
    }
  });
  return {
    element: h("div.editor", pre, textarea),
    textarea,
    get: () => textarea.value,
    set(text) { textarea.value = text; paint(); },
  };
}
