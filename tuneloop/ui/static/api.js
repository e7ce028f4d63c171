// The JSON API as the console uses it: the session's key as a bearer header, errors as ApiError.

const KEY = "tuneloop.key";
const ROLE = "tuneloop.role";

export class ApiError extends Error {
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export const session = {
  key: () => sessionStorage.getItem(KEY),
  role: () => sessionStorage.getItem(ROLE),
  save(key, role) {
    sessionStorage.setItem(KEY, key);
    sessionStorage.setItem(ROLE, role);
  },
  clear() {
    sessionStorage.removeItem(KEY);
    sessionStorage.removeItem(ROLE);
  },
};

async function errorFrom(response) {
  let message = `${response.status} ${response.statusText}`;
  let code = null;
  try {
    const body = await response.json();
    if (body && body.error) {
      message = body.error.message || message;
      code = body.error.code || null;
    }
  } catch {
    // not JSON: keep the status line
  }
  return new ApiError(response.status, message, code);
}

function request(path, {method = "GET", body, key = session.key(), signal} = {}) {
  const headers = {Accept: "application/json"};
  if (key) headers.Authorization = `Bearer ${key}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  return fetch(path, {
    method, headers, signal, credentials: "omit", cache: "no-store",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
}

/** Call the API; resolves to the parsed JSON body, rejects with ApiError (the API's message). */
export async function api(path, options = {}) {
  const response = await request(path, options);
  if (!response.ok) throw await errorFrom(response);
  return response.status === 204 ? null : response.json();
}

/** POST a multipart form (a file upload); resolves to the parsed JSON body, rejects with
 * ApiError. The browser sets the multipart Content-Type with its boundary. */
export async function upload(path, form, {signal} = {}) {
  const key = session.key();
  const headers = {Accept: "application/json"};
  if (key) headers.Authorization = `Bearer ${key}`;
  const response = await fetch(path, {method: "POST", headers, body: form, signal,
    credentials: "omit", cache: "no-store"});
  if (!response.ok) throw await errorFrom(response);
  return response.json();
}

/** Which view a key opens: "tenant", "admin"; rejects with the API's error for a bad key. */
export async function whoIs(key) {
  try {
    await api("/v1/adapters?metrics=false", {key});
    return "tenant";
  } catch (tenantError) {
    if (!(tenantError instanceof ApiError) || tenantError.status !== 401) throw tenantError;
    try {
      await api("/admin/tenants", {key});
      return "admin";
    } catch {
      throw tenantError;
    }
  }
}

/** POST a streaming chat request; calls onDelta(text) per content chunk; resolves to the
 * served model ("name@vN") when the stream ends. */
export async function streamChat(body, onDelta, signal) {
  const response = await request("/v1/chat/completions",
    {method: "POST", body: {...body, stream: true}, signal});
  if (!response.ok) throw await errorFrom(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let model = null;
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    buffer += value;
    let end;
    // Server-sent events: blank-line separated, each "data: <json>" (or "data: [DONE]").
    while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
      const data = event.split(/\r?\n/).filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).trimStart()).join("\n");
      if (!data || data === "[DONE]") continue;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new ApiError(response.status, chunk.error.message, chunk.error.code);
      model = chunk.model || model;
      for (const choice of chunk.choices || []) {
        const text = choice.delta && choice.delta.content;
        if (text) onDelta(text);
      }
    }
  }
  return model;
}
