// The retrain policy of an adapter as a form (GET/PUT /v1/adapters/{name}/policy). The API does
// all the validation; its 400 message is split per field and shown next to that field.

import {api} from "./api.js";
import {errorLine, h, replace, when} from "./dom.js";

const NUMBER = /^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/;

/** The RetrainPolicy schema's fields from the API's OpenAPI document ({} if unavailable):
 * {name: {type, nullable, description}}. */
async function policySchema(signal) {
  try {
    const doc = await api("/openapi.json", {key: null, signal});
    const schemas = (doc.components && doc.components.schemas) || {};
    const found = Object.entries(schemas).find(([key, s]) => /^RetrainPolicy(-Input)?$/.test(key)
      && s.properties);
    if (!found) return {};
    return Object.fromEntries(Object.entries(found[1].properties).map(([name, p]) => {
      const types = (p.anyOf || [p]).map((t) => t.type);
      return [name, {type: types.find((t) => t !== "null"), nullable: types.includes("null"),
        description: (p.description || "").replace(/``/g, "")}]; // docstrings' literals
    }));
  } catch (exc) {
    if (exc.name === "AbortError") throw exc;
    return {};
  }
}

/** Which field each part of an API error message is about: Map field -> [messages]; the key ""
 * holds what names no field. ``param`` wins; else "invalid request: a: msg; b: msg" is split,
 * and a cross-field message ("body: ...") goes to the first field it names. */
export function fieldErrors(error, names) {
  const out = new Map();
  const add = (field, text) => out.set(field, [...(out.get(field) || []), text]);
  if (error.param && names.includes(error.param)) {
    add(error.param, error.message);
    return out;
  }
  const parts = [];
  for (const piece of String(error.message).replace(/^invalid request:\s*/, "").split("; ")) {
    const found = /^([A-Za-z_][\w.]*): ([\s\S]*)$/.exec(piece);
    if (found) parts.push({loc: found[1], text: found[2]});
    else if (parts.length) parts[parts.length - 1].text += `; ${piece}`;
    else parts.push({loc: null, text: piece});
  }
  for (const {loc, text} of parts) {
    if (loc && names.includes(loc)) {
      add(loc, text);
      continue;
    }
    const clean = text.replace(/^Value error, /, "");
    const named = names.map((n) => [n, clean.search(new RegExp(`\\b${n}\\b`))])
      .filter(([, at]) => at >= 0).sort((a, b) => a[1] - b[1]);
    add(named.length ? named[0][0] : "", loc && loc !== "body" ? `${loc}: ${clean}` : clean);
  }
  return out;
}

function readValue(input, kind) {
  if (kind === "boolean") return input.checked;
  const raw = input.value.trim();
  if (raw === "") return null;
  return NUMBER.test(raw) ? Number(raw) : raw; // not a number: the API says so, inline
}

function fieldRow(name, value, spec) {
  const kind = spec.type === "boolean" || typeof value === "boolean" ? "boolean" : "number";
  const id = `policy-${name}`;
  const input = kind === "boolean"
    ? h("input", {id, name, type: "checkbox", checked: Boolean(value)})
    : h("input", {id, name, type: "text", value: value === null ? "" : String(value),
      inputmode: spec.type === "integer" ? "numeric" : "decimal", spellcheck: "false",
      placeholder: spec.nullable ? "empty: None (see below)" : null, autocomplete: "off"});
  const error = h("p", {class: "field-error error", id: `policy-error-${name}`, role: "alert",
    hidden: true});
  const row = h("div", {class: `field field-${kind}`, "data-field": name},
    kind === "boolean" ? [input, h("label", {for: id}, name)]
      : [h("label", {for: id}, name), input],
    spec.description ? h("small", {class: "muted help"}, spec.description) : null, error);
  return {name, row, input, error, read: () => readValue(input, kind)};
}

/** The policy form of adapter ``name``; saving replaces it with the stored policy. */
export async function policySection(name, ctx) {
  const path = `/v1/adapters/${encodeURIComponent(name)}/policy`;
  const box = h("div", {id: "policy"});
  const [body, schema] = await Promise.all([api(path, {signal: ctx.signal}),
    policySchema(ctx.signal)]);

  function draw(current, saved) {
    const fields = Object.entries(current.policy).map(([field, value]) =>
      fieldRow(field, value, schema[field] || {}));
    const formError = errorLine();
    formError.id = "policy-error";
    const names = fields.map((f) => f.name);

    async function submit(event) {
      event.preventDefault();
      formError.show(null);
      for (const f of fields) {
        f.error.hidden = true;
        f.row.classList.remove("invalid");
      }
      const policy = Object.fromEntries(fields.map((f) => [f.name, f.read()]));
      try {
        draw(await api(path, {method: "PUT", body: policy, signal: ctx.signal}), true);
      } catch (exc) {
        if (exc.name === "AbortError") return;
        if (exc.status !== 400) {
          formError.show(exc.message);
          return;
        }
        for (const [field, messages] of fieldErrors(exc, names)) {
          const f = fields.find((x) => x.name === field);
          if (!f) {
            formError.show(messages.join("; "));
            continue;
          }
          f.error.textContent = messages.join("; ");
          f.error.hidden = false;
          f.row.classList.add("invalid");
        }
      }
    }

    replace(box,
      h("p", {id: "policy-status", class: saved ? "notice-line" : "muted"},
        saved ? `Saved ${when(current.updated_at)}.`
          : current.configured
            ? `Set ${when(current.updated_at)}; the monitor watches this adapter.`
            : "No policy yet: these are the defaults, and the monitor skips this adapter until "
              + "a policy is saved."),
      h("form", {id: "policy-form", class: "policy", novalidate: true, on: {submit}},
        h("div", {class: "fields"}, fields.map((f) => f.row)),
        h("p", null, h("button", {type: "submit", id: "policy-save"}, "Save policy")),
        formError));
  }

  draw(body, false);
  return box;
}
