// The console's entry point: login/logout, the navigation and the hash router.
//
// Each view is `async (view, params, ctx)`; ctx.signal aborts its requests and ctx.every(ms, fn)
// repeats fn (until it returns false) while the view is shown; leaving the view stops both.

import {ApiError, session, whoIs} from "./api.js";
import {adapterList, adapterPage} from "./adapters.js";
import {h, replace} from "./dom.js";
import {versionPage} from "./evaluation.js";
import {jobList, jobPage} from "./jobs.js";
import {operatorView} from "./operator.js";
import {platformView} from "./platform.js";
import {playground} from "./playground.js";

const ROUTES = {
  tenant: [
    [/^\/adapters$/, adapterList],
    [/^\/adapters\/([^/]+)$/, adapterPage, ["name"]],
    [/^\/adapters\/([^/]+)\/versions\/(\d+)$/, versionPage, ["name", "version"]],
    [/^\/jobs$/, jobList],
    [/^\/jobs\/([^/]+)$/, jobPage, ["id"]],
    [/^\/playground$/, playground],
  ],
  admin: [[/^\/operator$/, operatorView], [/^\/platform$/, platformView]],
};
const NAV = {
  tenant: [["#/adapters", "Adapters"], ["#/jobs", "Jobs"], ["#/playground", "Playground"]],
  admin: [["#/operator", "Tenants and keys"], ["#/platform", "Engines, jobs, monitor"]],
};
const HOME = {tenant: "#/adapters", admin: "#/operator"};

const $ = (id) => document.getElementById(id);
let current = null;

function leaveView() {
  if (!current) return;
  current.abort.abort();
  for (const timer of current.timers) clearTimeout(timer);
  current = null;
}

function newContext() {
  const ctx = {abort: new AbortController(), timers: new Set()};
  ctx.signal = ctx.abort.signal;
  ctx.every = (ms, fn) => {
    const tick = async () => {
      ctx.timers.delete(timer);
      if (ctx.signal.aborted) return;
      if (await fn() && !ctx.signal.aborted) schedule();
    };
    let timer;
    const schedule = () => {
      timer = setTimeout(tick, ms);
      ctx.timers.add(timer);
    };
    schedule();
  };
  return ctx;
}

function match(role, hash) {
  const route = hash.replace(/^#/, "") || "/";
  for (const [pattern, view, names = []] of ROUTES[role] || []) {
    const found = pattern.exec(route);
    if (found) {
      const params = Object.fromEntries(names.map((n, i) => [n, decodeURIComponent(found[i + 1])]));
      return {view, params};
    }
  }
  return null;
}

function drawNav(role) {
  replace($("nav"), (NAV[role] || []).map(([href, label]) => {
    const active = location.hash === href || location.hash.startsWith(`${href}/`);
    return h("a", {href, class: active ? "active" : null}, label);
  }));
  $("who").textContent = role === "admin" ? "operator" : role ? "tenant" : "";
  $("logout").hidden = !role;
}

async function route() {
  leaveView();
  const role = session.role();
  const view = $("view");
  $("login").hidden = Boolean(role);
  drawNav(role);
  if (!role) {
    view.replaceChildren();
    $("login-key").focus();
    return;
  }
  const found = match(role, location.hash);
  if (!found) {
    location.replace(HOME[role]);
    return;
  }
  const ctx = newContext();
  current = ctx;
  replace(view, h("p", {class: "muted"}, "Loading…"));
  try {
    await found.view(view, found.params, ctx);
  } catch (exc) {
    if (exc.name === "AbortError" || ctx.signal.aborted) return;
    if (exc instanceof ApiError && exc.status === 401) {
      logout(`Your key was refused: ${exc.message}`);
      return;
    }
    replace(view, h("p", {class: "error", role: "alert"}, exc.message));
  }
}

/** Show hash's view (a changed hash routes through the hashchange event). */
function go(hash) {
  if (location.hash === hash || (!hash && !location.hash)) route();
  else location.hash = hash;
}

function logout(message) {
  session.clear();
  const error = $("login-error");
  error.textContent = message || "";
  error.hidden = !message;
  go("");
}

async function login(event) {
  event.preventDefault();
  const key = $("login-key").value.trim();
  const error = $("login-error");
  error.hidden = true;
  try {
    const role = await whoIs(key);
    session.save(key, role);
    $("login-key").value = "";
    go(HOME[role]);
  } catch (exc) {
    error.textContent = exc.message;
    error.hidden = false;
  }
}

$("login-form").addEventListener("submit", login);
$("logout").addEventListener("click", () => logout());
window.addEventListener("hashchange", route);
route();
