// DOM building without markup: every string becomes a text node, so data never turns into HTML.

const SVG_NS = "http://www.w3.org/2000/svg";

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function setAttrs(node, attrs) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "on") {
      for (const [event, handler] of Object.entries(value)) node.addEventListener(event, handler);
    } else if (name.startsWith("on")) {
      throw new Error(`use {on: {...}} for handlers, not the ${name} attribute`);
    } else {
      node.setAttribute(name, value === true ? "" : String(value));
    }
  }
  return node;
}

/** h("a", {href: "#/x"}, "text", child): an element; strings become text nodes. */
export function h(tag, attrs, ...children) {
  return append(setAttrs(document.createElement(tag), attrs), children);
}

/** An SVG element (same contract as h). */
export function svg(tag, attrs, ...children) {
  return append(setAttrs(document.createElementNS(SVG_NS, tag), attrs), children);
}

/** Replace the children of node. */
export function replace(node, ...children) {
  node.replaceChildren();
  return append(node, children);
}

/** A hidden inline error line; show(message) fills it, show(null) hides it. */
export function errorLine() {
  const node = h("p", {class: "error", role: "alert", hidden: true});
  node.show = (message) => {
    node.textContent = message || "";
    node.hidden = !message;
  };
  return node;
}

/** Unix seconds of an API time: unix seconds, or ISO text (naive ISO is UTC: SQLite drops
 * the zone the server stored); NaN when it is neither. */
export function seconds(value) {
  if (typeof value === "number") return value;
  if (typeof value !== "string") return NaN;
  const naive = /^\d{4}-\d\d-\d\dT[\d:.]+$/.test(value);
  return Date.parse(naive ? `${value}Z` : value) / 1000;
}

export function when(value) {
  if (value === null || value === undefined) return "";
  const date = new Date(seconds(value) * 1000);
  return Number.isNaN(date.getTime()) ? String(value) : date.toLocaleString();
}

export function number(value, digits = 4) {
  if (typeof value !== "number") return value === null || value === undefined ? "" : String(value);
  return Number.isInteger(value) ? String(value) : value.toFixed(digits);
}

/** A small key=value list of a flat object (nested values shown as JSON text). */
export function keyValues(object) {
  const entries = Object.entries(object || {});
  if (!entries.length) return h("span", {class: "muted"}, "none");
  return h("dl", {class: "kv"}, entries.map(([key, value]) => [
    h("dt", null, key),
    h("dd", null, typeof value === "object" && value !== null ? JSON.stringify(value)
      : number(value)),
  ]));
}

export function table(headers, rows, empty = "Nothing here yet.") {
  if (!rows.length) return h("p", {class: "muted"}, empty);
  return h("table", null,
    h("thead", null, h("tr", null, headers.map((label) => h("th", {scope: "col"}, label)))),
    h("tbody", null, rows.map((cells) => h("tr", null, cells.map((cell) => h("td", null, cell))))));
}
