// The operator's platform view (admin key): engines with their state and loaded adapters, the
// job queue across tenants and the monitor's recent decisions; refreshed every few seconds.

import {api} from "./api.js";
import {errorLine, h, replace, table, when} from "./dom.js";

const REFRESH_MS = 5000;
const EVENT_TYPES = ["", "decision", "gate", "promotion", "rollback", "job", "dataset", "policy",
  "error"];

function enginesTable(body) {
  if (!body.data.length) {
    return h("p", {class: "muted", id: "engines-none"}, `No engines: ${body.message}.`);
  }
  return table(["engine", "state", "url", "in flight", "adapters loaded"], body.data.map((e) => [
    h("span", {class: "engine-name"}, e.name),
    h("span", {class: `engine-state ${e.ready ? "good" : "bad"}`},
      e.state + (e.ready && !e.reachable ? " (unreachable)" : "")),
    h("code", null, e.url),
    String(e.in_flight),
    h("div", {class: "loaded"}, `${e.loaded_adapters.length} of ${e.capacity}`,
      e.loaded_adapters.length ? h("ul", {class: "loaded-adapters"},
        e.loaded_adapters.map((name) => h("li", null, h("code", null, name)))) : null),
  ]));
}

function progressText(job) {
  const p = job.progress || {};
  return p.total_steps ? `step ${p.step || 0}/${p.total_steps}` : "";
}

function queueTable(body) {
  return table(["tenant", "job", "adapter", "task", "status", "progress", "created"],
    body.data.map((j) => [j.organization_id, h("code", null, j.id), j.suffix, j.task,
      h("span", {class: `status status-${j.status}`}, j.status), progressText(j),
      when(j.created_at)]),
    "No job is waiting or running.");
}

function eventsTable(body) {
  return table(["time", "tenant", "adapter", "type", "action", "reason", "message"],
    body.data.map((e) => [when(e.created_at), e.tenant, e.adapter, e.type, e.action || "",
      e.reason || "", e.message]),
    "No monitor events yet.");
}

export async function platformView(view, _params, ctx) {
  const error = errorLine();
  const engines = h("div", {id: "engines"});
  const queue = h("div", {id: "job-queue"});
  const events = h("div", {id: "monitor-decisions"});
  const type = h("select", {id: "event-type", "aria-label": "event type"},
    EVENT_TYPES.map((t) => h("option", {value: t}, t || "all events")));

  async function refresh() {
    const query = new URLSearchParams({limit: "50"});
    if (type.value) query.set("type", type.value);
    const [e, q, m] = await Promise.all([
      api("/admin/engines", {signal: ctx.signal}),
      api("/admin/jobs", {signal: ctx.signal}),
      api(`/admin/monitor/events?${query}`, {signal: ctx.signal})]);
    replace(engines, enginesTable(e));
    replace(queue, queueTable(q), q.has_more ? h("p", {class: "muted"}, "More jobs wait.") : null);
    replace(events, eventsTable(m));
    error.show(null);
  }

  type.addEventListener("change", () => refresh().catch((exc) => {
    if (exc.name !== "AbortError") error.show(exc.message);
  }));
  await refresh();
  replace(view,
    h("h1", null, "Platform"),
    error,
    h("h2", null, "Engines"),
    h("p", {class: "muted"}, "As this gateway sees them (each gateway replica has its own view)."),
    engines,
    h("h2", null, "Job queue"), queue,
    h("h2", null, "Recent monitor decisions"),
    h("p", {class: "inline"}, type),
    events);
  ctx.every(REFRESH_MS, async () => {
    try {
      await refresh();
    } catch (exc) {
      if (exc.name !== "AbortError") error.show(exc.message);
    }
    return true;
  });
}
