// The new-job form of the jobs page: choose a dataset file, which is uploaded and validated by
// the API (POST /v1/files: every problem with its line number, nothing stored for a bad file);
// a valid file's first rows are previewed from the local copy, then the job is created
// (POST /v1/fine_tuning/jobs).

import {api, upload} from "./api.js";
import {errorLine, h, keyValues, replace, table} from "./dom.js";

const PREVIEW_ROWS = 5;
const PREVIEW_BYTES = 256 * 1024;
const LINE_ISSUE = /^line (\d+): ([\s\S]*)$/;

/** The problems of a refused file: [{line, text}] from the API message ("... problem(s); fix
 * them and upload again:\n  line 2: invalid JSON ...\n  ..."); line is null for file-wide ones. */
export function fileIssues(message) {
  const [heading, ...rest] = String(message).split("\n");
  const issues = rest.map((raw) => raw.trim()).filter(Boolean).map((text) => {
    const found = LINE_ISSUE.exec(text);
    return found ? {line: Number(found[1]), text: found[2]} : {line: null, text};
  });
  return {heading, issues};
}

/** Split one CSV record (RFC 4180 quotes; a record spanning lines is cut at the line end). */
function csvCells(line) {
  const cells = [];
  let cell = "";
  let quoted = false;
  for (let i = 0; i < line.length; i += 1) {
    const c = line[i];
    if (quoted) {
      if (c === '"' && line[i + 1] === '"') {
        cell += '"';
        i += 1;
      } else if (c === '"') {
        quoted = false;
      } else {
        cell += c;
      }
    } else if (c === '"') {
      quoted = true;
    } else if (c === ",") {
      cells.push(cell);
      cell = "";
    } else {
      cell += c;
    }
  }
  cells.push(cell);
  return cells;
}

function chatText(messages) {
  if (!Array.isArray(messages)) return JSON.stringify(messages);
  return messages.map((m) => `${m && m.role}: ${m && m.content}`).join("\n");
}

/** The first rows of a file's text: {headers, rows}, each row starting with its line number. */
export function previewRows(text, format, task) {
  const lines = text.replace(/^\uFEFF/, "").split(/\r?\n/);
  const numbered = lines.map((line, i) => [i + 1, line]).filter(([, line]) => line.trim());
  if (format === "csv") {
    const [header, ...records] = numbered;
    const names = header ? csvCells(header[1]) : [];
    return {headers: ["line", ...names], rows: records.slice(0, PREVIEW_ROWS)
      .map(([n, line]) => [String(n), ...csvCells(line)])};
  }
  const rows = numbered.slice(0, PREVIEW_ROWS).map(([n, line]) => {
    let record;
    try {
      record = JSON.parse(line);
    } catch {
      return [String(n), line, ""];
    }
    if (!record || typeof record !== "object") return [String(n), line, ""];
    if (task === "classification") return [String(n), String(record.text), String(record.label)];
    return [String(n), chatText(record.messages), ""];
  });
  return task === "classification" ? {headers: ["line", "text", "label"], rows}
    : {headers: ["line", "messages"], rows: rows.map((r) => r.slice(0, 2))};
}

/** {ids, base}: /v1/models (the base model first) when this process serves, else the
 * tenant's adapters (base null: the base model's name is then not known here). */
async function modelChoices(signal) {
  try {
    const body = await api("/v1/models", {signal});
    const ids = body.data.map((m) => m.id);
    return {ids, base: ids[0] || null};
  } catch (exc) {
    if (exc.name === "AbortError") throw exc;
    const adapters = await api("/v1/adapters?metrics=false", {signal});
    return {ids: adapters.data.map((a) => a.name), base: null};
  }
}

/** The form; ``onCreated(job)`` runs after the job is created. */
export function newJobForm(ctx, onCreated) {
  const fileInput = h("input", {id: "job-file", type: "file", accept: ".jsonl,.json,.csv,.txt"});
  const taskSelect = h("select", {id: "job-file-task"},
    h("option", {value: ""}, "detect from the file"),
    h("option", {value: "chat"}, "chat"), h("option", {value: "classification"}, "classification"));
  const checkBox = h("div", {id: "file-check", "aria-live": "polite"});
  const suffix = h("input", {id: "job-suffix", required: true, spellcheck: "false",
    placeholder: "adapter name"});
  const models = h("datalist", {id: "job-models"});
  const model = h("input", {id: "job-model", list: "job-models", required: true,
    spellcheck: "false", placeholder: "base model, or an adapter to warm-start from"});
  const epochs = h("input", {id: "job-epochs", type: "text", inputmode: "numeric",
    placeholder: "auto"});
  const autoPromote = h("input", {id: "job-auto-promote", type: "checkbox"});
  const jobError = errorLine();
  jobError.id = "job-error";
  const jobFields = h("fieldset", {id: "job-fields", hidden: true},
    h("legend", null, "Job"),
    h("div", {class: "fields"},
      h("div", {class: "field"}, h("label", {for: "job-suffix"}, "adapter"), suffix),
      h("div", {class: "field"}, h("label", {for: "job-model"}, "model"), model, models),
      h("div", {class: "field"}, h("label", {for: "job-epochs"}, "epochs"), epochs),
      h("div", {class: "field field-boolean"}, autoPromote,
        h("label", {for: "job-auto-promote"}, "promote when the gate passes"))),
    h("p", null, h("button", {type: "submit", id: "job-create"}, "Create job")), jobError);
  let file = null; // the uploaded file's API object

  modelChoices(ctx.signal).then(({ids, base}) => {
    replace(models, ids.map((id) => h("option", {value: id})));
    if (base && !model.value) model.value = base;
  }, () => {}); // no suggestions: the field still takes any name

  async function check() {
    file = null;
    jobFields.hidden = true;
    jobError.show(null);
    const chosen = fileInput.files[0];
    if (!chosen) {
      replace(checkBox);
      return;
    }
    replace(checkBox, h("p", {class: "muted"}, `Checking ${chosen.name}…`));
    const form = new FormData();
    form.append("purpose", "fine-tune");
    if (taskSelect.value) form.append("task", taskSelect.value);
    form.append("file", chosen, chosen.name);
    let uploaded;
    try {
      uploaded = await upload("/v1/files", form, {signal: ctx.signal});
    } catch (exc) {
      if (exc.name === "AbortError") return;
      const {heading, issues} = fileIssues(exc.message);
      replace(checkBox, h("p", {class: "error", id: "file-refused", role: "alert"}, heading),
        issues.length ? h("ul", {id: "file-issues", class: "issues"}, issues.map((issue) =>
          h("li", {"data-line": issue.line}, issue.line === null ? null
            : h("span", {class: "line-no"}, `line ${issue.line}`),
          issue.line === null ? issue.text : `: ${issue.text}`))) : null);
      return;
    }
    const {headers, rows} = previewRows(await chosen.slice(0, PREVIEW_BYTES).text(),
      uploaded.format, uploaded.task);
    file = uploaded;
    const stats = {id: uploaded.id, task: uploaded.task, format: uploaded.format,
      ...Object.fromEntries(Object.entries(uploaded.stats || {})
        .filter(([, v]) => v === null || typeof v !== "object"))};
    replace(checkBox,
      h("p", {class: "notice-line", id: "file-ok"}, `${chosen.name} is valid.`),
      keyValues(stats),
      h("h3", null, `First ${rows.length} rows`),
      h("div", {id: "file-preview"}, table(headers, rows)));
    if (!suffix.value) suffix.value = chosen.name.replace(/\.[^.]*$/, "").toLowerCase()
      .replace(/[^a-z0-9-]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 40);
    jobFields.hidden = false;
  }

  async function create(event) {
    event.preventDefault();
    if (!file) return;
    jobError.show(null);
    const body = {model: model.value.trim(), training_file: file.id, suffix: suffix.value.trim(),
      task: file.task, auto_promote: autoPromote.checked};
    const n = epochs.value.trim();
    if (n) body.hyperparameters = {n_epochs: /^\d+$/.test(n) ? Number(n) : n};
    try {
      onCreated(await api("/v1/fine_tuning/jobs", {method: "POST", body, signal: ctx.signal}));
    } catch (exc) {
      if (exc.name !== "AbortError") jobError.show(exc.message);
    }
  }

  fileInput.addEventListener("change", check);
  taskSelect.addEventListener("change", check);
  return h("form", {id: "new-job", class: "card", novalidate: true, on: {submit: create}},
    h("h2", null, "New fine-tuning job"),
    h("div", {class: "inline"}, h("label", {for: "job-file"}, "Dataset"), fileInput,
      h("label", {for: "job-file-task"}, "task"), taskSelect),
    h("p", {class: "muted"}, "Chat: OpenAI fine-tuning JSONL ({\"messages\": [...]}); "
      + "classification: JSONL or CSV with text and label. The file is checked by the API "
      + "before any job exists."),
    checkBox, jobFields);
}
