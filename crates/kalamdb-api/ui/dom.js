// Building DOM without innerHTML: every value from the server goes in as text.

/**
 * `h("div.row#id", {onclick, title, ...}, children...)`: an element with classes, an id,
 * attributes or properties (functions become listeners) and children (strings become text).
 */
export function h(spec, attrs, ...children) {
  const [, tag, rest] = spec.match(/^([a-z0-9]+)(.*)$/i);
  const el = document.createElement(tag);
  for (const part of rest.match(/[.#][^.#]+/g) || []) {
    if (part[0] === ".") el.classList.add(part.slice(1));
    else el.id = part.slice(1);
  }
  // Attributes are a plain object literal; anything else (text, nodes, arrays) is a child.
  if (attrs && (typeof attrs !== "object" || attrs instanceof Node || Array.isArray(attrs) || Object.getPrototypeOf(attrs) !== Object.prototype)) {
    children.unshift(attrs);
    attrs = null;
  }
  for (const [k, v] of Object.entries(attrs || {})) {
    if (/^(inner|outer)html$/i.test(k)) throw new Error(`h(): ${k} is never set (text only)`);
    if (v === undefined || v === null || (v === false && !(k in el))) continue;
    if (typeof v === "function") el.addEventListener(k.replace(/^on/, ""), v);
    else if (k in el && k !== "list") el[k] = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replaces an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** An SVG element with attributes. */
export function svg(tag, attrs = {}) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}
