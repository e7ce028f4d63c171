// What the monitor knows about one adapter: drift per window and quality on feedback over time
// (GET .../drift), feedback counts, its events (GET .../events) and retrains (GET .../retrains).

import {api} from "./api.js";
import {lineChart, timeAxis} from "./chart.js";
import {gateSummary} from "./evaluation.js";
import {errorLine, h, keyValues, number, replace, seconds, table, when} from "./dom.js";

const HISTORY = 200;
const EVENTS_PAGE = 50;
const TESTS = [["input_drift", "input drift (texts)"],
  ["prediction_drift", "prediction drift (labels)"]];

const pValue = (p) => (p < 1e-3 ? p.toExponential(1) : p.toFixed(3));
const percent = (v) => `${(v * 100).toFixed(1)}%`;

function driftPoints(history, test, field) {
  return history.filter((r) => r.new_window && r[test] && typeof r[test][field] === "number")
    .map((r) => {
      const t = r[test];
      return {x: seconds(r.window_end || r.created_at), y: t[field], mark: t.drifted ? "bad" : null,
        title: `${when(r.window_end || r.created_at)}: statistic ${number(t.statistic)}, `
          + `p ${pValue(t.p_value)} (threshold ${t.threshold}), ${r.n_window} inputs, `
          + `v${r.version}`};
    });
}

function qualityPoints(history, check) {
  return history.map((r) => [r, r.quality && r.quality.checks && r.quality.checks[check]])
    .filter(([, c]) => c && typeof c.value === "number")
    .map(([r, c]) => ({x: seconds(r.created_at), y: c.value, mark: c.worse ? "bad" : null,
      title: `${when(r.created_at)}: ${percent(c.value)} of ${c.n} (v${r.version})`}));
}

function latestWindow(drift) {
  const rows = TESTS.filter(([key]) => drift[key]).map(([key, label]) => {
    const t = drift[key];
    return [label, h("span", {class: t.drifted ? "bad" : null}, t.status),
      number(t.statistic), typeof t.p_value === "number" ? pValue(t.p_value) : "",
      String(t.threshold), `${t.n_window} / ${t.n_reference}`];
  });
  return table(["test", "status", "statistic", "p-value", "threshold", "window / reference"],
    rows, "No drift window tested yet (the monitor needs enough new production inputs).");
}

function chartBlock(title, chart) {
  return h("figure", {class: "chart-block"}, h("figcaption", null, title), chart);
}

/** Drift and quality over time, the latest window and the feedback counts. */
export function driftSection(drift) {
  const history = [...drift.history].reverse(); // oldest first
  const threshold = (key) => {
    const t = drift[key]; // the latest window's test
    return t && typeof t.threshold === "number" ? {y: t.threshold, label: "threshold"} : null;
  };
  const charts = [];
  for (const [key, label] of TESTS) {
    const points = driftPoints(history, key, "p_value");
    if (!points.length && key === "prediction_drift") continue;
    charts.push(chartBlock(`${label}: p-value per window (log scale)`, lineChart(points, {
      id: `chart-${key}-p`, label: `${label} p-value`, xLabel: "window", log: true,
      reference: threshold(key), xFormat: timeAxis, yFormat: pValue})));
    charts.push(chartBlock(`${label}: statistic per window`, lineChart(
      driftPoints(history, key, "statistic"), {id: `chart-${key}-stat`,
        label: `${label} statistic`, xLabel: "window", xFormat: timeAxis})));
  }
  const quality = drift.quality || {};
  const checks = quality.checks || {};
  const baseline = (check) => (checks[check] && typeof checks[check].baseline === "number"
    ? {y: checks[check].baseline, label: "at promotion"} : null);
  charts.push(chartBlock("accuracy on labeled feedback", lineChart(qualityPoints(history,
    "accuracy"), {id: "chart-accuracy", label: "feedback accuracy", xLabel: "report",
    reference: baseline("accuracy"), xFormat: timeAxis, yFormat: percent})));
  charts.push(chartBlock("negative-rating rate", lineChart(qualityPoints(history,
    "negative_rate"), {id: "chart-negative-rate", label: "negative-rating rate", xLabel: "report",
    reference: baseline("negative_rate"), xFormat: timeAxis, yFormat: percent})));
  const status = [];
  if (!drift.monitored) {
    status.push(h("p", {class: "muted"}, "Not monitored: save a retrain policy to start."));
  }
  status.push(h("p", {id: "drift-status"}, "Champion ", h("strong", null, drift.champion || "none"),
    " · drift alarm: ", h("strong", {class: drift.drift_alarm ? "bad" : "good"},
      drift.drift_alarm ? "on" : "off"),
    quality.status ? [" · quality: ", h("strong", {class: quality.degraded ? "bad" : null},
      quality.status)] : null));
  return h("div", {id: "drift"}, status,
    h("h3", null, "Latest window"), latestWindow(drift),
    h("div", {class: "charts"}, charts),
    h("h3", null, "Feedback counts"),
    h("div", {id: "feedback-counts"}, keyValues(quality.counts)));
}

/** The monitor's events, newest first, with an "Older events" button. */
export function eventsSection(name, ctx) {
  const box = h("div", {id: "monitor-events"});
  const error = errorLine();
  const rows = [];
  let before = null;

  async function more() {
    error.show(null);
    const query = new URLSearchParams({limit: String(EVENTS_PAGE)});
    if (before !== null) query.set("before", String(before));
    try {
      const page = await api(`/v1/adapters/${encodeURIComponent(name)}/events?${query}`,
        {signal: ctx.signal});
      rows.push(...page.data);
      if (page.data.length) before = Number(page.data[page.data.length - 1].id.split("-").pop());
      draw(page.has_more);
    } catch (exc) {
      if (exc.name !== "AbortError") error.show(exc.message);
    }
  }

  function draw(hasMore) {
    replace(box,
      table(["time", "type", "action", "reason", "message"], rows.map((e) => [
        when(e.created_at), e.type, e.action || "", e.reason || "", e.message]),
      "No monitor events yet."),
      hasMore ? h("button", {type: "button", id: "older-events", on: {click: more}},
        "Older events") : null,
      error);
  }

  return {box, load: more};
}

/** The retrains the monitor started: trigger, dataset, job, candidate and the gate's numbers. */
export function retrainsSection(runs) {
  return table(["started", "trigger", "status", "dataset", "job", "candidate", "gate"],
    runs.map((r) => [
      when(r.created_at), r.trigger, r.status,
      r.dataset_version ? h("code", {title: `${r.dataset_version} (training file `
        + `${r.training_file}, validation file ${r.validation_file})`},
      String(r.dataset_version).slice(0, 12)) : "",
      r.job_id ? h("a", {href: `#/jobs/${encodeURIComponent(r.job_id)}`}, r.job_id) : "",
      r.candidate_version ? `v${r.candidate_version}` : "",
      r.gate ? gateSummary(r.gate) : "",
    ]), "The monitor has not retrained this adapter.");
}

/** Drift, quality, events and retrains of adapter ``name``, drawn into their boxes. */
export async function monitorSection(name, ctx) {
  const base = `/v1/adapters/${encodeURIComponent(name)}`;
  const events = eventsSection(name, ctx);
  const [drift, runs] = await Promise.all([
    api(`${base}/drift?limit=${HISTORY}`, {signal: ctx.signal}),
    api(`${base}/retrains`, {signal: ctx.signal}), events.load()]);
  return [
    h("h2", null, "Drift and quality over time"), driftSection(drift),
    h("h2", null, "Retrains"), h("div", {id: "retrains"}, retrainsSection(runs.data)),
    h("h2", null, "Monitor events"), events.box,
  ];
}
