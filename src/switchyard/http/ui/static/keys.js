// Keys (create with the secret shown once, edit, rotate, revoke) and teams; a key's own view.
import { api, budgetBar, el, field, showError, sizeBars, table, usd } from "./ui.js";

function keyForm(onDone, key = null) {
  const name = el("input", { required: !key, value: key?.name ?? "" });
  const models = el("input", { placeholder: "all", value: key?.models?.join(", ") ?? "" });
  const amount = el("input", { type: "number", min: 0, step: "0.01", value: key?.budget?.amount_usd ?? "" });
  const period = el("select", {}, ["monthly", "daily", "total"].map((p) => el("option", { value: p, text: p })));
  if (key?.budget) period.value = key.budget.period;
  const team = el("input", { placeholder: "none", value: key?.team_name ?? key?.team ?? "" });
  const rpm = el("input", { type: "number", min: 1, value: key?.limits?.rpm ?? "" });
  const expires = el("input", { type: "date", value: key?.expires_at?.slice(0, 10) ?? "" });
  const admin = el("input", { type: "checkbox" });
  const error = el("p", { class: "error", role: "alert" });
  const form = el("form", {}, field("Name", name), field("Models (comma-separated)", models),
    field("Team", team), field("Budget (USD)", amount), field("Budget period", period), field("Requests per minute", rpm),
    field("Expires", expires), key ? null : field("Admin", admin),
    el("button", { type: "submit", text: key ? "Save" : "Create key" }), error);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const list = models.value.split(",").map((m) => m.trim()).filter(Boolean);
    const body = {
      name: name.value || undefined, models: list.length ? list : null, team: team.value.trim() || null,
      budget: amount.value === "" ? null : { amount_usd: Number(amount.value), period: period.value },
      limits: rpm.value === "" ? null : { ...(key?.limits || {}), rpm: Number(rpm.value) },
      expires_at: expires.value ? new Date(`${expires.value}T23:59:59Z`).toISOString() : null,
    };
    if (!key) { body.admin = admin.checked; for (const k of Object.keys(body)) if (body[k] === null) delete body[k]; }
    try {
      const made = await api(key ? `/admin/keys/${key.id}` : "/admin/keys", { method: key ? "PATCH" : "POST", body });
      if (!key) form.reset();
      error.textContent = "";
      onDone(made);
    } catch (err) { error.textContent = err.message; }
  });
  return form;
}

function secretPanel(made) {
  const copy = el("button", { type: "button", class: "secondary", text: "Copy" });
  copy.addEventListener("click", async () => {
    try { await navigator.clipboard.writeText(made.key); copy.textContent = "Copied"; }
    catch { copy.textContent = "Select and copy the key"; }
  });
  return el("div", { class: "panel", id: "new-secret", role: "status" },
    el("p", { text: `The key for “${made.name}”. It is shown once: copy it now.` }),
    el("p", {}, el("code", { class: "secret", id: "new-secret-value", text: made.key }), " ", copy));
}

export async function keysView(view) {
  const notice = el("div");
  const list = el("div", { id: "keys-list" });
  async function reload() {
    try {
      const keys = (await api("/admin/keys")).data;
      const status = await Promise.all(keys.map((k) => k.budget ? api(`/admin/keys/${k.id}`).then((d) => d.budget_status) : null));
      keys.forEach((k, i) => { k.budget_status = status[i] && { ...status[i], amount_usd: k.budget.amount_usd, period: k.budget.period }; });
      list.replaceChildren(table([
        { label: "Name", key: "name" }, { label: "Prefix", key: "prefix" },
        { label: "Role", render: (k) => k.admin ? "admin" : "key" }, { label: "Team", render: (k) => k.team_name ?? "" },
        { label: "Models", render: (k) => k.models?.join(", ") ?? "all" }, { label: "Budget", render: (k) => budgetBar(k.budget_status) },
        { label: "RPM", render: (k) => k.limits?.rpm ?? "" }, { label: "Expires", render: (k) => k.expires_at?.slice(0, 10) ?? "never" },
        { label: "Actions", render: (k) => el("span", {},
          el("button", { type: "button", class: "secondary", "aria-label": `Edit ${k.name}`, text: "Edit",
            onclick: () => notice.replaceChildren(el("h2", { text: `Edit ${k.name}` }), keyForm(() => { notice.replaceChildren(); reload(); }, k)) }),
          el("button", { type: "button", class: "secondary", "aria-label": `Rotate ${k.name}`, text: "Rotate",
            onclick: async () => { if (confirm(`Rotate ${k.name}? The old secret stops working.`)) { notice.replaceChildren(secretPanel(await api(`/admin/keys/${k.id}/rotate`, { method: "POST" }))); reload(); } } }),
          el("button", { type: "button", class: "secondary", "aria-label": `Revoke ${k.name}`, text: "Revoke",
            onclick: async () => { if (confirm(`Revoke ${k.name}?`)) { await api(`/admin/keys/${k.id}/revoke`, { method: "POST" }); reload(); } } })) }],
      keys));
      sizeBars(list);
    } catch (err) { list.replaceChildren(); showError(list, err); }
  }
  view.append(el("h1", { text: "Keys" }), notice, el("h2", { text: "Create a key" }),
    keyForm((made) => { notice.replaceChildren(secretPanel(made)); reload(); }), el("h2", { text: "All keys" }), list);
  await reload();
}

export async function teamsView(view) {
  const list = el("div");
  const name = el("input", { required: true });
  const amount = el("input", { type: "number", min: 0, step: "0.01" });
  const period = el("select", {}, ["monthly", "daily", "total"].map((p) => el("option", { value: p, text: p })));
  const error = el("p", { class: "error", role: "alert" });
  async function reload() {
    try {
      const teams = (await api("/admin/teams")).data;
      list.replaceChildren(table([{ label: "Name", key: "name" }, { label: "Keys", key: "keys", num: true },
        { label: "Budget", render: (t) => t.budget ? `${usd(t.budget.amount_usd)} ${t.budget.period}` : "none" },
        { label: "RPM", render: (t) => t.limits?.rpm ?? "" }], teams));
    } catch (err) { list.replaceChildren(); showError(list, err); }
  }
  const form = el("form", {}, field("Name", name), field("Budget (USD)", amount), field("Budget period", period),
    el("button", { type: "submit", text: "Create team" }), error);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = { name: name.value };
    if (amount.value !== "") body.budget = { amount_usd: Number(amount.value), period: period.value };
    try { await api("/admin/teams", { method: "POST", body }); name.value = ""; error.textContent = ""; reload(); }
    catch (err) { error.textContent = err.message; }
  });
  view.append(el("h1", { text: "Teams" }), form, list);
  await reload();
}


export async function meView(view) {
  const me = await api("/ui/api/me");
  const key = me.key;
  const bar = budgetBar(me.budget_status && key?.budget && { ...me.budget_status, ...key.budget });
  view.append(el("h1", { text: `Key: ${me.name}` }),
    key ? table([{ label: "Setting", key: "k" }, { label: "Value", key: "v" }], [
      { k: "Prefix", v: key.prefix }, { k: "Team", v: key.team_name ?? "none" },
      { k: "Expires", v: key.expires_at ?? "never" }, { k: "Limits", v: JSON.stringify(key.limits ?? {}) },
      { k: "Budget", v: key.budget ? `${usd(key.budget.amount_usd)} ${key.budget.period}` : "none" }]) : null,
    el("h2", { text: "Budget" }), el("p", { id: "my-budget" }, bar),
    el("h2", { text: "Models" }), el("ul", { id: "my-models" }, me.models.map((m) => el("li", { text: m }))));
  sizeBars(view);
}

