// A version's evaluation: headline metrics and the gate (also used by the adapter page), and the
// version page: held-out metrics against the champion and the base, the confusion matrix and
// per-label precision/recall of a classifier.
//
// A version made by a fine-tuning job stores {eval: {adapter, base, champion}, gate, train,
// parity, ...} (training/jobs/publish.py); one registered from outside stores whatever metrics
// its owner sent, shown as they are.

import {api} from "./api.js";
import {h, keyValues, number, replace, table, when} from "./dom.js";

const HEADLINE = [["accuracy", "accuracy"], ["macro_f1", "macro-F1"], ["eval_loss", "eval loss"],
  ["rouge_l", "ROUGE-L"]];
const CLASSIFICATION_ROWS = [["accuracy", "accuracy"], ["macro_f1", "macro-F1"],
  ["examples", "held-out examples"]];
const CHAT_ROWS = [["eval_loss", "eval loss"], ["perplexity", "perplexity"],
  ["exact_match", "exact match"], ["rouge_l", "ROUGE-L"], ["examples", "examples replied to"],
  ["eval_tokens", "eval tokens"]];
const HEAT_STEPS = 5;

const isObject = (value) => value !== null && typeof value === "object" && !Array.isArray(value);
const scalars = (object) => Object.fromEntries(Object.entries(object || {})
  .filter(([, value]) => !isObject(value) && !Array.isArray(value)));
const signed = (value) => (value > 0 ? "+" : "") + number(value);

/** {job, candidate, base, champion, gate} of a version's metrics (job: made by a job). */
export function evaluationOf(metrics) {
  const m = isObject(metrics) ? metrics : {};
  const gate = isObject(m.gate) ? m.gate : null;
  if (!isObject(m.eval)) return {job: false, candidate: m, base: null, champion: null, gate};
  const pick = (key) => (isObject(m.eval[key]) ? m.eval[key] : null);
  return {job: true, candidate: pick("adapter") || {}, base: pick("base"),
    champion: pick("champion"), gate};
}

/** The metrics cell of a version: accuracy, macro-F1, eval loss (a job's version) or the
 * owner's own flat metrics. */
export function headlineMetrics(metrics) {
  const e = evaluationOf(metrics);
  if (!e.job) return keyValues(scalars(e.candidate));
  const picked = {};
  for (const [key, label] of HEADLINE) {
    if (typeof e.candidate[key] === "number") picked[label] = e.candidate[key];
  }
  return keyValues(picked);
}

/** The gate's verdict with its numbers (its sentence as the tooltip). */
export function gateSummary(gate) {
  if (!isObject(gate)) return h("span", {class: "muted"}, "not gated");
  const numbers = [`candidate ${number(gate.candidate)}`];
  if (typeof gate.champion === "number") {
    numbers.push(`champion${gate.champion_version ? ` ${gate.champion_version}` : ""} `
      + number(gate.champion));
  }
  if (typeof gate.base === "number") numbers.push(`base ${number(gate.base)}`);
  if (typeof gate.new_delta === "number") numbers.push(`Δ ${signed(gate.new_delta)}`);
  if (typeof gate.previous_delta === "number") {
    numbers.push(`previous split Δ ${signed(gate.previous_delta)}`);
  }
  return h("span", {class: "gate", title: gate.message || null},
    h("strong", {class: gate.passed ? "good" : "bad"}, gate.passed ? "passed" : "failed"),
    ` ${gate.reason || ""} · ${gate.metric || "metric"} `,
    h("span", {class: "gate-numbers"}, numbers.join(" · ")));
}

function comparisonTable(e, rows) {
  const columns = [["candidate", e.candidate], ["champion (same split)", e.champion],
    ["base model", e.base]].filter(([, m]) => m);
  const present = rows.filter(([key]) => columns.some(([, m]) => typeof m[key] === "number"));
  if (!present.length) return h("p", {class: "muted"}, "No held-out metrics stored.");
  return table(["metric", ...columns.map(([label]) => label)], present.map(([key, label]) => [
    label, ...columns.map(([, m]) => number(m[key]))]));
}

function heat(count, rowTotal) {
  if (!rowTotal || !count) return 0;
  return Math.min(HEAT_STEPS - 1, 1 + Math.floor((count / rowTotal) * (HEAT_STEPS - 1)));
}

/** confusion[true][predicted] as a table: rows are true labels, columns predictions. */
export function confusionMatrix(confusion, id) {
  const labels = Object.keys(confusion);
  const predicted = [...new Set([...labels,
    ...labels.flatMap((t) => Object.keys(confusion[t] || {}))])];
  return h("table", {class: "confusion", id},
    h("thead", null, h("tr", null, h("th", {scope: "col"}, "true \\ predicted"),
      predicted.map((p) => h("th", {scope: "col"}, p)))),
    h("tbody", null, labels.map((t) => {
      const row = confusion[t] || {};
      const total = Object.values(row).reduce((a, b) => a + (Number(b) || 0), 0);
      return h("tr", null, h("th", {scope: "row"}, t), predicted.map((p) => {
        const count = Number(row[p]) || 0;
        return h("td", {class: `num heat-${heat(count, total)}${p === t ? " diag" : ""}`,
          "data-true": t, "data-predicted": p}, String(count));
      }));
    })));
}

function perLabelTable(candidate, champion) {
  const labels = Object.keys(candidate);
  const headers = ["label", "precision", "recall", "F1", "support"];
  if (champion) headers.push("champion precision", "champion recall", "champion F1");
  return h("div", {id: "per-label"}, table(headers, labels.map((label) => {
    const c = candidate[label] || {};
    const row = [label, number(c.precision), number(c.recall), number(c.f1), number(c.support)];
    if (champion) {
      const o = champion[label] || {};
      row.push(number(o.precision), number(o.recall), number(o.f1));
    }
    return row;
  })));
}

function classificationDetails(e) {
  const out = [];
  const c = e.candidate;
  if (isObject(c.confusion)) {
    out.push(h("h2", null, "Confusion matrix (held-out split)"),
      confusionMatrix(c.confusion, "confusion"));
  }
  if (isObject(c.per_class)) {
    out.push(h("h2", null, "Per label"),
      perLabelTable(c.per_class, e.champion && isObject(e.champion.per_class)
        ? e.champion.per_class : null));
  }
  if (e.champion && isObject(e.champion.confusion)) {
    out.push(h("h2", null, `Champion ${e.champion.version || ""} on the same split`),
      confusionMatrix(e.champion.confusion, "champion-confusion"));
  }
  if (!out.length) {
    out.push(h("p", {class: "muted", id: "no-breakdown"}, "This version's metrics carry no "
      + "confusion matrix or per-label scores (only what its owner registered)."));
  }
  return out;
}

const text = (value) => (typeof value === "string" ? value : "");

/** A chat version's held-out samples side by side: prompt, reference, the champion's reply (from
 * the monitor's gate, when a retrain produced this version) and this version's reply. */
function chatDetails(e, run) {
  const gated = run && Array.isArray(run.evaluation && run.evaluation.samples)
    ? run.evaluation.samples : [];
  const own = Array.isArray(e.candidate.samples) ? e.candidate.samples : [];
  const samples = gated.length ? gated : own;
  if (!samples.length) {
    return h("p", {class: "muted", id: "no-samples"}, "No held-out samples stored with this "
      + "version (versions trained before samples were kept, or registered from an archive).");
  }
  const champion = gated.length > 0;
  const headers = ["prompt", "reference"].concat(champion ? ["champion", "this version"]
    : ["this version"]);
  return [h("h2", null, "Held-out samples"),
    h("div", {id: "samples"}, table(headers, samples.map((row) => [
      text(row.prompt), text(row.reference)].concat(champion
      ? [text(row.champion), text(row.candidate)] : [text(row.candidate)]))))];
}

/** The version page: #/adapters/{name}/versions/{version}. */
export async function versionPage(view, {name, version}, ctx) {
  const adapter = await api(`/v1/adapters/${encodeURIComponent(name)}`, {signal: ctx.signal});
  const v = adapter.versions.find((row) => row.version === Number(version));
  if (!v) throw new Error(`${name} has no version ${version}`);
  const e = evaluationOf(v.metrics);
  const classification = v.task === "classification";
  const m = isObject(v.metrics) ? v.metrics : {};
  let run = null;
  if (!classification) {  // the retrain that produced it, for the champion's replies
    const runs = await api(`/v1/adapters/${encodeURIComponent(name)}/retrains?limit=100`,
      {signal: ctx.signal}).catch((exc) => {
      if (exc.name === "AbortError") throw exc;
      return {data: []};  // no monitor data: the version's own samples still show
    });
    run = (runs.data || []).find((r) => r.candidate_version === v.version) || null;
  }
  replace(view,
    h("p", null, h("a", {href: `#/adapters/${encodeURIComponent(name)}`}, `← ${name}`)),
    h("h1", null, v.id),
    h("p", null, "State: ", h("strong", {class: `state state-${v.state}`}, v.state),
      v.version === adapter.champion_version ? " (champion)" : "", ` · task ${v.task} · created `,
      when(v.created_at)),
    classification && v.labels ? h("p", null, "Labels: ", v.labels.join(", ")) : null,
    h("h2", null, "Gate"),
    h("p", {id: "gate"}, gateSummary(e.gate)),
    e.gate && e.gate.message ? h("p", {class: "muted"}, e.gate.message) : null,
    h("h2", null, "Held-out metrics"),
    e.job ? comparisonTable(e, classification ? CLASSIFICATION_ROWS : CHAT_ROWS)
      : keyValues(scalars(e.candidate)),
    classification ? classificationDetails(e) : chatDetails(e, run),
    isObject(m.train) ? [h("h2", null, "Training"), keyValues(scalars(m.train))] : null,
    isObject(m.parity) ? [h("h2", null, "Engine/PEFT parity"), keyValues(scalars(m.parity))]
      : null,
    h("h2", null, "Lineage"),
    keyValues(v.lineage));
}
