// Playground: streaming chat with any model the tenant may use, and a classify box.

import {api, streamChat} from "./api.js";
import {errorLine, h, number, replace} from "./dom.js";

/** Model ids for the picker: /v1/models when this process serves, else the tenant's adapters. */
async function modelChoices(signal) {
  try {
    const body = await api("/v1/models", {signal});
    return {ids: body.data.map((m) => m.id), note: null};
  } catch (exc) {
    if (exc.name === "AbortError") throw exc;
    const adapters = await api("/v1/adapters?metrics=false", {signal});
    return {ids: adapters.data.map((a) => a.name),
      note: `The model list is unavailable (${exc.message}); showing your adapters.`};
  }
}

function picker(id, ids) {
  return h("select", {id}, ids.map((value) => h("option", {value}, value)));
}

function chatBox(ids, ctx) {
  const messages = [];
  const log = h("div", {class: "chat-log", id: "chat-log"});
  const model = picker("chat-model", ids);
  const input = h("textarea", {id: "chat-input", rows: 3, required: true,
    placeholder: "Say something"});
  // Empty: the engine's defaults. Temperature 0 gives the greedy (reproducible) reply.
  const temperature = h("input", {id: "chat-temperature", type: "number", min: 0, max: 2,
    step: 0.1, placeholder: "default", class: "short"});
  const maxTokens = h("input", {id: "chat-max-tokens", type: "number", min: 1, step: 1,
    placeholder: "default", class: "short"});
  const send = h("button", {type: "submit", id: "chat-send"}, "Send");
  const error = errorLine();
  const served = h("p", {class: "muted", id: "chat-served"});

  async function submit(event) {
    event.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    error.show(null);
    messages.push({role: "user", content: text});
    log.append(h("p", {class: "msg user"}, text));
    const reply = h("p", {class: "msg assistant"});
    log.append(reply);
    input.value = "";
    send.disabled = true;
    try {
      const request = {model: model.value, messages: [...messages]};
      if (temperature.value !== "") request.temperature = Number(temperature.value);
      if (maxTokens.value !== "") request.max_tokens = Number(maxTokens.value);
      const name = await streamChat(request,
        (delta) => reply.append(document.createTextNode(delta)), ctx.signal);
      messages.push({role: "assistant", content: reply.textContent});
      served.textContent = name ? `answered by ${name}` : "";
    } catch (exc) {
      if (exc.name !== "AbortError") error.show(exc.message);
      messages.pop();
      reply.remove();
    } finally {
      send.disabled = false;
    }
  }

  return h("section", {class: "card"},
    h("h2", null, "Chat"),
    h("form", {id: "chat-form", on: {submit}},
      h("label", {for: "chat-model"}, "Model"), model,
      h("label", {for: "chat-temperature"}, "Temperature"), temperature,
      h("label", {for: "chat-max-tokens"}, "Max tokens"), maxTokens, log, input, send),
    served, error);
}

function classifyBox(ids, ctx) {
  const model = picker("classify-model", ids);
  const input = h("textarea", {id: "classify-input", rows: 2, required: true,
    placeholder: "Text to classify"});
  const result = h("div", {id: "classify-result"});
  const error = errorLine();

  async function submit(event) {
    event.preventDefault();
    error.show(null);
    try {
      const body = await api("/v1/classify", {method: "POST", signal: ctx.signal,
        body: {model: model.value, input: input.value}});
      const item = body.data[0];
      const ranked = Object.entries(item.probabilities).sort((a, b) => b[1] - a[1]);
      replace(result,
        h("p", null, "Label: ", h("strong", {class: "label"}, item.label), ` (${body.model})`),
        h("table", {class: "bars"}, ranked.map(([label, p]) => h("tr", null,
          h("th", {scope: "row"}, label),
          h("td", null, h("meter", {min: 0, max: 1, value: p})),
          h("td", {class: "num"}, number(p, 3))))));
    } catch (exc) {
      if (exc.name !== "AbortError") error.show(exc.message);
    }
  }

  return h("section", {class: "card"},
    h("h2", null, "Classify"),
    h("form", {id: "classify-form", on: {submit}},
      h("label", {for: "classify-model"}, "Model"), model, input,
      h("button", {type: "submit"}, "Classify")),
    result, error);
}

export async function playground(view, _params, ctx) {
  const {ids, note} = await modelChoices(ctx.signal);
  replace(view,
    h("h1", null, "Playground"),
    note ? h("p", {class: "muted", id: "models-note"}, note) : null,
    h("div", {class: "columns"}, chatBox(ids, ctx), classifyBox(ids, ctx)));
}
