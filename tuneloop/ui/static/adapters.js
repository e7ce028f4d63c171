// Adapters: the tenant's list, and one adapter's versions, champion history, promote/rollback.

import {api} from "./api.js";
import {errorLine, h, keyValues, replace, table, when} from "./dom.js";

const path = (name) => `/v1/adapters/${encodeURIComponent(name)}`;

function stateCounts(versions) {
  const counts = {};
  for (const v of versions) counts[v.state] = (counts[v.state] || 0) + 1;
  return Object.entries(counts).map(([state, n]) => `${n} ${state}`).join(", ");
}

export async function adapterList(view, _params, ctx) {
  const body = await api("/v1/adapters", {signal: ctx.signal});
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

function historyTimeline(history) {
  if (!history.length) return h("p", {class: "muted"}, "No champion changes yet.");
  return h("ol", {class: "timeline"}, [...history].reverse().map((c) => h("li", null,
    h("span", {class: "when"}, when(c.created_at)), " ",
    h("strong", null, c.action), " ",
    c.from_version ? `v${c.from_version} → v${c.to_version}` : `→ v${c.to_version}`,
    c.reason ? h("span", {class: "reason"}, ` (${c.reason})`) : null)));
}

export async function adapterPage(view, {name}, ctx) {
  const error = errorLine();
  error.classList.add("action-error");

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
    const rows = adapter.versions.map((v) => {
      const isChampion = v.version === adapter.champion_version;
      return [
        h("span", {class: "version"}, `v${v.version}`),
        h("span", {class: `state state-${v.state}`}, isChampion ? `${v.state} (champion)` : v.state),
        keyValues(v.metrics),
        keyValues(v.lineage),
        when(v.created_at),
        isChampion || v.state !== "ready" ? "" : h("button", {type: "button", class: "promote", "data-version": v.version,
          on: {click: () => change("promote", v.version)}}, `Promote v${v.version}`),
      ];
    });
    replace(view,
      h("p", null, h("a", {href: "#/adapters"}, "← Adapters")),
      h("h1", null, adapter.name),
      h("p", null, "Task: ", h("strong", null, adapter.task), " · champion: ",
        h("strong", {id: "champion"}, adapter.champion || "none")),
      h("p", null, h("button", {type: "button", id: "rollback", on: {click: () => change("rollback")}}, "Roll back")),
      error,
      h("h2", null, "Versions"),
      table(["version", "state", "metrics", "lineage", "created", ""], rows),
      h("h2", null, "Champion history"),
      historyTimeline(adapter.history));
  }

  draw(await api(path(name), {signal: ctx.signal}));
}
