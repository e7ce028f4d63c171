// The adapter's latest requests from the request log (GET .../requests): when, which version,
// the input and output (previews cut by the API) and the feedback each got. All tenant data is
// drawn as text.

import {api} from "./api.js";
import {h, table, when} from "./dom.js";

const LATEST = 20;

function feedbackItem(f) {
  const parts = [];
  if (f.rating === 1) parts.push(h("span", {class: "good rating"}, "good"));
  if (f.rating === -1) parts.push(h("span", {class: "bad rating"}, "bad"));
  if (f.label !== null && f.label !== undefined) {
    parts.push(h("span", {class: "fb-label"}, "label ", h("strong", null, f.label)));
  }
  if (f.correction) parts.push(h("span", {class: "fb-correction"}, `correction: ${f.correction}`));
  if (f.comment) parts.push(h("span", {class: "fb-comment"}, `comment: ${f.comment}`));
  return h("li", null, parts.flatMap((part, i) => (i ? [" · ", part] : [part])));
}

function feedbackCell(items) {
  if (!items.length) return h("span", {class: "muted"}, "none");
  return h("ul", {class: "feedback-list"}, items.map(feedbackItem));
}

/** The latest requests of adapter ``name`` with their feedback, as a table. */
export async function requestsSection(name, ctx) {
  const body = await api(`/v1/adapters/${encodeURIComponent(name)}/requests?limit=${LATEST}`,
    {signal: ctx.signal});
  return [
    h("h2", null, "Latest requests"),
    h("div", {id: "latest-requests"},
      table(["time", "version", "input", "output", "feedback"], body.data.map((r) => [
        when(r.created_at),
        h("span", {class: "version"}, r.model),
        h("span", {class: "preview"}, r.input === null ? "" : r.input),
        h("span", {class: "preview"}, r.output === null ? "" : r.output),
        feedbackCell(r.feedback),
      ]), "No requests logged yet (the request log keeps what this adapter served).")),
  ];
}
