// The operator's view (admin key): tenants, their keys (a new key is shown once), disable/enable.

import {api} from "./api.js";
import {errorLine, h, replace, table, when} from "./dom.js";

const tenantPath = (name) => `/admin/tenants/${encodeURIComponent(name)}`;

export async function operatorView(view, _params, ctx) {
  const error = errorLine();
  const newKey = h("div", {id: "new-key", class: "card notice", hidden: true});
  const tenantsBox = h("div", {id: "tenants"});
  const keysBox = h("div", {id: "keys"});
  const nameInput = h("input", {id: "tenant-name", required: true, spellcheck: "false",
    placeholder: "lowercase letters, digits and -"});
  let openTenant = null;

  async function act(work) {
    error.show(null);
    try {
      await work();
    } catch (exc) {
      if (exc.name !== "AbortError") error.show(exc.message);
    }
  }

  function showKey(created) {
    replace(newKey,
      h("p", null, `New key for ${created.tenant}: copy it now, it is not shown again.`),
      h("code", {class: "secret"}, created.key),
      h("p", null, h("button", {type: "button", on: {click: () => {
        replace(newKey);
        newKey.hidden = true;
      }}}, "I have copied it")));
    newKey.hidden = false;
  }

  const createKey = (tenant) => act(async () => {
    showKey(await api(`${tenantPath(tenant)}/keys`, {method: "POST", signal: ctx.signal}));
    if (openTenant === tenant) await drawKeys(tenant);
  });

  async function drawKeys(tenant) {
    openTenant = tenant;
    const body = await api(`${tenantPath(tenant)}/keys`, {signal: ctx.signal});
    replace(keysBox,
      h("h2", null, `Keys of ${tenant}`),
      table(["id", "prefix", "created", "revoked", ""], body.data.map((k) => [
        String(k.id), h("code", null, k.prefix), when(k.created_at), when(k.revoked_at),
        k.revoked_at ? "" : h("button", {type: "button", class: "revoke", on: {click: () => {
          if (!window.confirm(`Revoke key ${k.prefix}… of ${tenant}? Clients using it stop working.`)) return;
          act(async () => {
            await api(`${tenantPath(tenant)}/keys/${k.id}`, {method: "DELETE", signal: ctx.signal});
            await drawKeys(tenant);
          });
        }}}, "Revoke"),
      ]), "No keys."));
  }

  function setState(tenant, action) {
    if (action === "disable"
        && !window.confirm(`Disable tenant ${tenant}? Its keys stop working until enabled.`)) return;
    act(async () => {
      await api(`${tenantPath(tenant)}/${action}`, {method: "POST", signal: ctx.signal});
      await drawTenants();
    });
  }

  async function drawTenants() {
    const body = await api("/admin/tenants", {signal: ctx.signal});
    replace(tenantsBox, table(["tenant", "state", "created", ""], body.data.map((t) => [
      h("span", {class: "tenant-name"}, t.name), t.state, when(t.created_at),
      h("span", {class: "actions"},
        h("button", {type: "button", class: "new-key", on: {click: () => createKey(t.name)}},
          "New key"),
        h("button", {type: "button", class: "show-keys", on: {click: () => act(() => drawKeys(t.name))}},
          "Keys"),
        t.state === "disabled"
          ? h("button", {type: "button", class: "enable", on: {click: () => setState(t.name, "enable")}}, "Enable")
          : h("button", {type: "button", class: "disable", on: {click: () => setState(t.name, "disable")}}, "Disable")),
    ]), "No tenants yet."));
  }

  const createTenant = (event) => {
    event.preventDefault();
    act(async () => {
      const name = nameInput.value.trim();
      await api("/admin/tenants", {method: "POST", body: {name}, signal: ctx.signal});
      nameInput.value = "";
      await drawTenants();
      showKey(await api(`${tenantPath(name)}/keys`, {method: "POST", signal: ctx.signal}));
    });
  };

  await drawTenants();
  replace(view,
    h("h1", null, "Operator"),
    h("form", {id: "create-tenant", class: "inline", on: {submit: createTenant}},
      h("label", {for: "tenant-name"}, "New tenant"), nameInput,
      h("button", {type: "submit"}, "Create tenant and key")),
    error, newKey,
    h("h2", null, "Tenants"), tenantsBox, keysBox);
}
