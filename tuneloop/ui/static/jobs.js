// Fine-tuning jobs: the list with the new-job form (newjob.js), and one job's status, progress,
// loss curve, events and cancel.

import {api} from "./api.js";
import {lineChart} from "./chart.js";
import {errorLine, h, keyValues, number, replace, table, when} from "./dom.js";
import {newJobForm} from "./newjob.js";

const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const REFRESH_MS = 2000;
const SHOWN_EVENTS = 50;

const jobPath = (id) => `/v1/fine_tuning/jobs/${encodeURIComponent(id)}`;

function progressBar(progress, status) {
  const step = Number(progress.step) || 0;
  const total = Number(progress.total_steps) || 0;
  const done = status === "succeeded";
  const bar = h("progress", {class: "job-progress", max: total || 1,
    value: done ? total || 1 : Math.min(step, total || step)});
  const label = total ? `step ${step}/${total}` : done ? "done" : "not started";
  return h("span", {class: "progress"}, bar, " ", h("span", {class: "progress-label"}, label));
}

export async function jobList(view, _params, ctx) {
  const body = await api("/v1/fine_tuning/jobs?limit=100", {signal: ctx.signal});
  const created = (job) => {
    location.hash = `#/jobs/${encodeURIComponent(job.id)}`;
  };
  replace(view,
    h("h1", null, "Fine-tuning jobs"),
    newJobForm(ctx, created),
    h("h2", null, "Jobs"),
    table(["job", "adapter", "model", "status", "progress", "created"], body.data.map((j) => [
      h("a", {href: `#/jobs/${encodeURIComponent(j.id)}`, class: "job-link"}, j.id),
      j.suffix, j.model, h("span", {class: `status status-${j.status}`}, j.status),
      progressBar(j.progress || {}, j.status), when(j.created_at),
    ]), "No jobs yet."),
    body.has_more ? h("p", {class: "muted"}, "Showing the newest 100 jobs.") : null);
}

/** Follows one job's events oldest first from a cursor, so each refresh reads only new ones. */
function eventFollower(id, signal) {
  const events = [];
  let after = null;
  return async () => {
    for (;;) {
      const query = new URLSearchParams({order: "asc", limit: "1000"});
      if (after) query.set("after", after);
      const page = await api(`${jobPath(id)}/events?${query}`, {signal});
      events.push(...page.data);
      if (page.data.length) after = page.data[page.data.length - 1].id;
      if (!page.has_more) return events;
    }
  };
}

function lossPoints(events) {
  return events.filter((e) => e.type === "metrics" && e.data && typeof e.data.train_loss === "number")
    .map((e) => ({x: Number(e.data.step), y: e.data.train_loss}));
}

export async function jobPage(view, {id}, ctx) {
  const error = errorLine();
  const readEvents = eventFollower(id, ctx.signal);
  let job = null;

  async function cancel() {
    if (!window.confirm(`Cancel job ${id}?`)) return;
    error.show(null);
    try {
      job = await api(`${jobPath(id)}/cancel`, {method: "POST", signal: ctx.signal});
      await refresh();
    } catch (exc) {
      if (exc.name !== "AbortError") error.show(exc.message);
    }
  }

  function draw(events, checkpoints) {
    const p = job.progress || {};
    replace(view,
      h("p", null, h("a", {href: "#/jobs"}, "← Jobs")),
      h("h1", null, job.id),
      h("p", null, "Status: ", h("strong", {class: `status status-${job.status}`, id: "job-status"},
        job.status), job.cancel_requested && !TERMINAL.has(job.status) ? " (cancel requested)" : ""),
      h("p", null, progressBar(p, job.status)),
      h("dl", {class: "kv"},
        h("dt", null, "adapter"), h("dd", null, job.suffix),
        h("dt", null, "model"), h("dd", null, job.model),
        h("dt", null, "task"), h("dd", null, job.task),
        h("dt", null, "loss"), h("dd", null, number(p.loss)),
        h("dt", null, "tokens/s"), h("dd", null, number(p.tokens_per_s, 1)),
        h("dt", null, "result"), h("dd", null, job.fine_tuned_model || "")),
      job.error ? h("p", {class: "error"}, job.error.message || JSON.stringify(job.error)) : null,
      TERMINAL.has(job.status) || job.cancel_requested ? null
        : h("button", {type: "button", id: "cancel", on: {click: cancel}}, "Cancel job"),
      error,
      h("h2", null, "Training loss"),
      lineChart(lossPoints(events)),
      h("h2", null, "Checkpoints"),
      table(["step", "checkpoint", "metrics", "saved"], checkpoints.map((c) => [
        String(c.step_number), h("code", null, c.fine_tuned_model_checkpoint), keyValues(c.metrics),
        when(c.created_at)]), "No checkpoints yet."),
      h("h2", null, "Hyperparameters"),
      keyValues(job.hyperparameters),
      h("h2", null, "Events"),
      table(["time", "type", "message"], events.slice(-SHOWN_EVENTS).reverse().map((e) => [
        when(e.created_at), e.type, e.message])));
  }

  async function refresh() {
    job = await api(jobPath(id), {signal: ctx.signal});
    const [events, checkpoints] = await Promise.all([
      readEvents(), api(`${jobPath(id)}/checkpoints?limit=100`, {signal: ctx.signal})]);
    draw(events, checkpoints.data);
    return !TERMINAL.has(job.status);
  }

  if (await refresh()) {
    ctx.every(REFRESH_MS, async () => {
      try {
        return await refresh();
      } catch (exc) {
        if (exc.name !== "AbortError") error.show(exc.message);
        return true;
      }
    });
  }
}
