// Adapters: the tenant's list, and one adapter's page: versions (metrics, gate, lineage), the
// champion history, promote/rollback, the retrain policy form, the latest requests with their
// feedback, drift/quality and monitor events.

import {api} from "./api.js";
import {errorLine, h, keyValues, replace, table, when} from "./dom.js";
import {gateSummary, headlineMetrics} from "./evaluation.js";
import {monitorSection} from "./monitor.js";
import {policySection} from "./policy.js";
import {requestsSection} from "./requests.js";

const path = (name) => `/v1/adapters/${encodeURIComponent(name)}`;
const isObject = (value) => value !== null && typeof value === "object" && !Array.isArray(value);
// Lineage keys drawn as links or left to the version page (long, rarely needed in a table).
const LINEAGE_SHOWN = ["job_id", "training_file", "validation_file", "parent_version"];
const LINEAGE_HIDDEN = ["hyperparameters", "code_version", "base_fingerprint", "run_name",
  "runner", "source"];

function withClass(node, name) {
  node.classList.add(name);
  return node;
}

function stateCounts(versions) {
  const counts = {};
  for (const v of versions) counts[v.state] = (counts[v.state] || 0) + 1;
  return Object.entries(counts).map(([state, n]) => `${n} ${state}`).join(", ");
}

export async function adapterList(view, _params, ctx) {
  const body = await api("/v1/adapters?metrics=false", {signal: ctx.signal});
  replace(view,
    h("h1", null, "Adapters"),
    table(["name", "task", "champion", "versions", "states"], body.data.map((a) => [
      h("a", {href: `#/adapters/${encodeURIComponent(a.name)}`, class: "adapter-link"}, a.name),
      a.task,
      a.champion || h("span", {class: "muted"}, "none"),
      h("span", {class: "versions-count"}, String(a.versions.length)),
      stateCounts(a.versions),
    ]), "No adapters yet: register a version or run a fine-tuning job."));
}

function fileLine(role, file) {
  return h("div", {class: "lineage-file"}, `${role}: `, h("code", null, String(file.id)),
    file.filename ? ` ${file.filename}` : "",
    typeof file.examples === "number" ? ` (${file.examples} examples)` : "");
}

/** Lineage: the job (a link to its page), its dataset files, the parent; the rest as text. */
function lineageCell(lineage) {
  const l = isObject(lineage) ? lineage : {};
  const rest = Object.fromEntries(Object.entries(l).filter(([key]) =>
    !LINEAGE_SHOWN.includes(key) && !LINEAGE_HIDDEN.includes(key)));
  return h("div", {class: "lineage"},
    typeof l.job_id === "string" ? h("div", null, "job ", h("a", {
      href: `#/jobs/${encodeURIComponent(l.job_id)}`, class: "lineage-job"}, l.job_id)) : null,
    isObject(l.training_file) ? fileLine("training", l.training_file) : null,
    isObject(l.validation_file) ? fileLine("validation", l.validation_file) : null,
    l.parent_version ? h("div", null, `warm start from ${l.parent_version}`) : null,
    Object.keys(rest).length ? keyValues(rest) : null);
}

function historyTimeline(history, championVersion) {
  if (!history.length) return h("p", {class: "muted"}, "No champion changes yet.");
  const newestFirst = [...history].reverse();
  return h("ol", {class: "timeline", id: "champion-history"}, newestFirst.map((c, i) => h("li", {
    class: i === 0 && c.to_version === championVersion ? "current" : null},
  h("span", {class: "when"}, when(c.created_at)), " ",
  h("strong", null, c.action), " ",
  c.from_version ? `v${c.from_version} → v${c.to_version}` : `→ v${c.to_version}`,
  c.reason ? h("span", {class: "reason"}, ` (${c.reason})`) : null)));
}

/** A section drawn when its data arrives; a failure shows its message in the section only. */
function lazySection(id, load) {
  const box = h("div", {id, class: "section"}, h("p", {class: "muted"}, "Loading…"));
  load().then((children) => replace(box, children), (exc) => {
    if (exc.name !== "AbortError") replace(box, h("p", {class: "error"}, exc.message));
  });
  return box;
}

export async function adapterPage(view, {name}, ctx) {
  const error = errorLine();
  error.classList.add("action-error");
  const core = h("div", {id: "adapter-core"});

  async function change(action, version) {
    const question = action === "promote"
      ? `Make ${name}@v${version} the champion? Traffic to "${name}" switches to it.`
      : `Roll ${name} back to the previous champion?`;
    if (!window.confirm(question)) return;
    error.show(null);
    try {
      const adapter = await api(`${path(name)}/${action}`, {
        method: "POST", body: action === "promote" ? {version} : {}, signal: ctx.signal});
      draw(adapter);
    } catch (exc) {
      if (exc.name !== "AbortError") error.show(exc.message);
    }
  }

  function draw(adapter) {
    const base = `#/adapters/${encodeURIComponent(name)}/versions`;
    const rows = adapter.versions.map((v) => {
      const isChampion = v.version === adapter.champion_version;
      return [
        h("a", {href: `${base}/${v.version}`, class: "version"}, `v${v.version}`),
        h("span", {class: `state state-${v.state}`},
          isChampion ? `${v.state} (champion)` : v.state),
        withClass(headlineMetrics(v.metrics), "metrics"),
        gateSummary(isObject(v.metrics) ? v.metrics.gate : null),
        lineageCell(v.lineage),
        when(v.created_at),
        isChampion || v.state !== "ready" ? "" : h("button", {type: "button", class: "promote",
          "data-version": v.version, on: {click: () => change("promote", v.version)}},
        `Promote v${v.version}`),
      ];
    });
    replace(core,
      h("h1", null, adapter.name),
      h("p", null, "Task: ", h("strong", null, adapter.task), " · champion: ",
        h("strong", {id: "champion"}, adapter.champion || "none")),
      h("p", null, h("button", {type: "button", id: "rollback",
        on: {click: () => change("rollback")}}, "Roll back")),
      error,
      h("h2", null, "Versions"),
      table(["version", "state", "metrics", "gate", "lineage", "created", ""], rows),
      h("h2", null, "Champion history"),
      historyTimeline(adapter.history, adapter.champion_version));
  }

  draw(await api(path(name), {signal: ctx.signal}));
  replace(view,
    h("p", null, h("a", {href: "#/adapters"}, "← Adapters")),
    core,
    h("h2", null, "Retrain policy"),
    lazySection("policy-section", async () => policySection(name, ctx)),
    lazySection("requests-section", () => requestsSection(name, ctx)),
    lazySection("monitor-section", () => monitorSection(name, ctx)));
}
