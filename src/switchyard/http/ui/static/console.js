// The Switchyard console: plain ES modules, no framework, no inline script (the CSP allows none).
// Every change goes through the admin API (or /v1) with the session cookie and the CSRF token.
// Text from the server is only ever set as textContent, never parsed as HTML.
import { barChart } from "./chart.js";

const state = { csrf: null, me: null };

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export async function api(path, { method = "GET", body } = {}) {
  const headers = {};
  if (body !== undefined) headers["content-type"] = "application/json";
  if (method !== "GET" && state.csrf) headers["x-csrf-token"] = state.csrf;
  const resp = await fetch(path, { method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body) });
  const data = resp.headers.get("content-type")?.includes("json") ? await resp.json() : null;
  if (!resp.ok) {
    const err = new Error(data?.error?.message || `${resp.status} ${resp.statusText}`);
    err.status = resp.status;
    throw err;
  }
  return data;
}

const $ = (id) => document.getElementById(id);
const usd = (v) => `$${Number(v || 0).toFixed(v && v < 0.01 ? 6 : 2)}`;
const csvCell = (v) => /[",\n]/.test(String(v ?? "")) ? `"${String(v).replaceAll('"', '""')}"` : String(v ?? "");

function budgetBar(status) {
  if (!status) return el("span", { class: "hint", text: "no budget" });
  const spent = Number(status.spent_usd || 0), limit = Number(status.amount_usd ?? status.limit_usd ?? 0);
  const share = limit > 0 ? Math.min(spent / limit, 1) : 1;
  return el("span", { class: "budget" },
    el("span", { class: "budget-track", role: "progressbar", "aria-label": "Budget spent",
      "aria-valuemin": 0, "aria-valuemax": limit, "aria-valuenow": spent.toFixed(6) },
      el("span", { class: `budget-fill${spent >= limit ? " over" : ""}`, style: null,
        "data-share": share.toFixed(4) })),
    el("span", { class: "budget-text", text: `${usd(spent)} of ${usd(limit)} (${status.period})` }));
}

// The fill width is set from script (a style attribute in markup would need 'unsafe-inline').
function sizeBars(root) {
  for (const fill of root.querySelectorAll(".budget-fill")) fill.style.width = `${Number(fill.dataset.share) * 100}%`;
}

// A wide table scrolls inside its box on a phone: the box takes focus, so a keyboard can scroll it.
function table(columns, rows, label = columns.map((c) => c.label).join(", ")) {
  return el("div", { class: "table-wrap", tabindex: 0, role: "region", "aria-label": `Table: ${label}` }, el("table", {},
    el("thead", {}, el("tr", {}, columns.map((c) => el("th", { scope: "col", class: c.num ? "num" : null, text: c.label })))),
    el("tbody", {}, rows.map((row) => el("tr", {}, columns.map((c) => {
      const value = c.render ? c.render(row) : row[c.key];
      return el("td", { class: c.num ? "num" : null }, value instanceof Node ? value : String(value ?? ""));
    }))))));
}

function field(label, input) {
  const id = `f-${Math.random().toString(36).slice(2)}`;
  input.id = id;
  return el("div", { class: "field" }, el("label", { for: id, text: label }), input);
}

function showError(view, err) {
  view.append(el("p", { class: "error", role: "alert", text: err.message }));
}

// -- views ------------------------------------------------------------------------------------
const RANGES = { "24h": "Last 24 hours", "7d": "Last 7 days", "30d": "Last 30 days", "365d": "Last year" };
const METRICS = { cost_usd: "Cost (USD)", requests: "Requests", total_tokens: "Tokens", errors: "Errors" };

async function usageView(view) {
  const admin = state.me.admin;
  const range = el("select", {}, Object.entries(RANGES).map(([v, t]) => el("option", { value: v, text: t })));
  range.value = "7d";
  const metric = el("select", {}, Object.entries(METRICS).map(([v, t]) => el("option", { value: v, text: t })));
  const by = el("select", {}, (admin ? ["model", "key", "team"] : ["model"]).map((v) => el("option", { value: v, text: `per ${v}` })));
  const out = el("div", { id: "usage-out" });
  const exportBtn = el("button", { type: "button", class: "secondary", text: "Export CSV" });
  let last = [];
  const base = admin ? "/admin/usage" : "/ui/api/me/usage";
  async function draw() {
    out.replaceChildren(el("p", { class: "hint", text: "Loading…" }));
    try {
      const step = range.value === "24h" ? "hour" : "day";
      const [series, split] = await Promise.all([
        api(`${base}?since=${range.value}&group_by=${step}`),
        api(`${base}?since=${range.value}&group_by=${by.value === "team" ? "key" : by.value}`)]);
      if (by.value === "team") split.data = await perTeam(split.data);
      last = split.data;
      const name = METRICS[metric.value];
      out.replaceChildren(
        el("div", { class: "chart", role: "img", "aria-label": `${name} per ${step}, ${RANGES[range.value]}` },
          barChart(series.data.map((r) => ({ label: r.period, value: Number(r[metric.value] || 0) })), name)),
        el("p", { id: "usage-totals", text: `Total: ${split.totals.requests} requests, ${split.totals.total_tokens} tokens, ${usd(split.totals.cost_usd)}` }),
        table([
          by.value === "key" ? { label: "Key", render: (r) => r.key_name ?? r.key_id ?? "(no key)" }
            : by.value === "team" ? { label: "Team", render: (r) => r.team ?? "(no team)" } : { label: "Model", key: "model" },
          { label: "Requests", key: "requests", num: true }, { label: "Tokens", key: "total_tokens", num: true },
          { label: "Errors", key: "errors", num: true },
          { label: "Error rate", render: (r) => r.requests ? `${((100 * r.errors) / r.requests).toFixed(1)}%` : "", num: true },
          { label: "Cost", render: (r) => usd(r.cost_usd), num: true }],
        split.data));
    } catch (err) { out.replaceChildren(); showError(out, err); }
  }
  exportBtn.addEventListener("click", () => {
    if (!last.length) return;
    const cols = Object.keys(last[0]);
    const csv = [cols.join(","), ...last.map((r) => cols.map((c) => csvCell(r[c])).join(","))].join("\n");
    const link = el("a", { href: URL.createObjectURL(new Blob([csv], { type: "text/csv" })), download: `usage-${range.value}.csv` });
    link.click();
  });
  for (const s of [range, metric, by]) s.addEventListener("change", draw);
  view.append(el("h1", { text: admin ? "Usage and cost" : "My usage" }),
    el("form", { onsubmit: (e) => e.preventDefault() }, field("Range", range), field("Chart", metric), field("Table", by), exportBtn),
    out);
  await draw();
}

// Per team: the rollups are per key, and a key names its team (a key moved to another team takes its
// past usage along).
async function perTeam(rows) {
  const keys = (await api("/admin/keys?include_revoked=true")).data;
  const team = Object.fromEntries(keys.map((k) => [k.id, k.team_name ?? k.team]));
  const out = new Map();
  for (const r of rows) {
    const name = team[r.key_id] ?? null;
    const acc = out.get(name) ?? { team: name, requests: 0, total_tokens: 0, errors: 0, cost_usd: 0 };
    for (const f of ["requests", "total_tokens", "errors", "cost_usd"]) acc[f] += Number(r[f] || 0);
    out.set(name, acc);
  }
  return [...out.values()];
}

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

async function keysView(view) {
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

async function teamsView(view) {
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

async function modelsView(view) {
  const box = el("div");
  view.append(el("h1", { text: "Models and upstreams" }), box);
  async function reload() {
    try {
      const [status, local] = await Promise.all([api("/admin/status"), api("/v1/status")]);
      const mib = (b) => `${(Number(b || 0) / 2 ** 20).toFixed(0)} MiB`;
      box.replaceChildren(
        el("h2", { text: "Upstreams" }),
        table([{ label: "Name", key: "name" }, { label: "Type", key: "type" }, { label: "URL", key: "base_url" },
          { label: "Reachable", render: (u) => u.reachable ? "yes" : `no ${u.error ?? ""}` },
          { label: "Breaker", render: (u) => u.breaker ?? "" }, { label: "Cooldown", render: (u) => u.cooldown_s ? `${u.cooldown_s}s` : "" },
          { label: "Models", render: (u) => (u.models || []).length }], status.upstreams),
        el("h2", { text: "Local models" }),
        el("p", { text: `Memory: ${mib(local.memory_used_bytes)} used of ${mib(local.memory_budget_bytes)}` }),
        table([{ label: "Model", key: "id" }, { label: "Engine", key: "engine" }, { label: "State", key: "state" },
          { label: "Memory", render: (m) => mib(m.memory_bytes) },
          { label: "Actions", render: (m) => { const loaded = m.state === "loaded"; return el("button", { type: "button",
            class: "secondary", text: loaded ? "Unload" : "Load", "aria-label": `${loaded ? "Unload" : "Load"} ${m.id}`,
            onclick: async () => { await api(`/v1/models/${encodeURIComponent(m.id)}/${loaded ? "unload" : "load"}`, { method: "POST" }); reload(); } }); } }],
        local.models),
        el("h2", { text: "Recent errors" }),
        status.recent_errors.length ? el("pre", { text: JSON.stringify(status.recent_errors.slice(0, 20), null, 2) }) : el("p", { class: "hint", text: "None." }),
        await storedModels(reload), await credentials(reload));
    } catch (err) { box.replaceChildren(); showError(box, err); }
  }
  await reload();
}

// Models stored over /admin/models (the file's are listed, read-only): add, disable or enable, remove.
async function storedModels(reload) {
  const models = (await api("/admin/models")).data;
  const alias = el("input", { required: true }), provider = el("input", { required: true }), upstream = el("input");
  const inCost = el("input", { type: "number", min: 0, step: "any" }), outCost = el("input", { type: "number", min: 0, step: "any" });
  const error = el("p", { class: "error", role: "alert" });
  const form = el("form", { "aria-label": "Add a model" }, field("Alias", alias), field("Provider", provider),
    field("Upstream model", upstream), field("Input USD per 1M tokens", inCost), field("Output USD per 1M tokens", outCost),
    el("button", { type: "submit", text: "Add model" }), error);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = { alias: alias.value, provider: provider.value };
    if (upstream.value) body.model = upstream.value;
    if (inCost.value !== "") body.input_cost_per_1m = Number(inCost.value);
    if (outCost.value !== "") body.output_cost_per_1m = Number(outCost.value);
    try { await api("/admin/models", { method: "POST", body }); await reload(); } catch (err) { error.textContent = err.message; }
  });
  const action = (m) => m.source !== "database" ? el("span", { class: "hint", text: "from the file" }) : el("span", {},
    el("button", { type: "button", class: "secondary", text: m.active === false ? "Enable" : "Disable",
      "aria-label": `${m.active === false ? "Enable" : "Disable"} ${m.alias}`,
      onclick: async () => { await api(`/admin/models/${m.id}`, { method: "PATCH", body: { active: m.active === false } }); reload(); } }),
    el("button", { type: "button", class: "secondary", text: "Remove", "aria-label": `Remove ${m.alias}`,
      onclick: async () => { if (confirm(`Remove ${m.alias}?`)) { await api(`/admin/models/${m.id}`, { method: "DELETE" }); reload(); } } }));
  return el("section", { id: "stored-models", "aria-labelledby": "stored-models-title" },
    el("h2", { id: "stored-models-title", text: "Model aliases" }),
    table([{ label: "Alias", key: "alias" }, { label: "Provider", key: "provider" }, { label: "Upstream model", key: "model" },
      { label: "Source", key: "source" }, { label: "Active", render: (m) => m.active === false ? "no" : "yes" },
      { label: "USD per 1M in / out", render: (m) => m.input_cost_per_1m == null ? "" : `${m.input_cost_per_1m} / ${m.output_cost_per_1m ?? 0}` },
      { label: "Actions", render: action }], models),
    el("h3", { text: "Add a model" }), form);
}

// Vault credentials: only their display form is ever shown; a new one is checked live unless told not to.
async function credentials(reload) {
  let creds;
  try { creds = (await api("/admin/credentials")).data; } catch (err) {
    return el("section", {}, el("h2", { text: "Credentials" }), el("p", { class: "hint", text: err.message }));
  }
  const name = el("input", { required: true }), provider = el("input", { required: true, value: "openai" });
  const secret = el("input", { type: "password", required: true, autocomplete: "off" }), base = el("input", { type: "url" });
  const check = el("input", { type: "checkbox", checked: true });
  const error = el("p", { class: "error", role: "alert" });
  const form = el("form", { "aria-label": "Add a credential" }, field("Credential name", name), field("Provider kind", provider),
    field("Provider API key", secret), field("Base URL", base), field("Check it live", check),
    el("button", { type: "submit", text: "Add credential" }), error);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = { name: name.value, provider: provider.value, api_key: secret.value, check: check.checked };
    if (base.value) body.base_url = base.value;
    try { await api("/admin/credentials", { method: "POST", body }); secret.value = ""; await reload(); }
    catch (err) { secret.value = ""; error.textContent = err.message; }
  });
  return el("section", { id: "credentials", "aria-labelledby": "credentials-title" },
    el("h2", { id: "credentials-title", text: "Credentials" }),
    table([{ label: "Name", key: "name" }, { label: "Provider", key: "provider" }, { label: "Key", key: "display" },
      { label: "Active", render: (c) => c.active ? "yes" : "no" },
      { label: "Last check", render: (c) => c.last_check_ok == null ? "never" : (c.last_check_ok ? "ok" : "failed") }], creds),
    el("h3", { text: "Add a credential" }), form);
}

async function meView(view) {
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

async function playgroundView(view) {
  const models = (await api("/v1/models")).data.map((m) => m.id);
  const model = el("select", {}, models.map((m) => el("option", { value: m, text: m })));
  const prompt = el("textarea", { rows: 3, required: true });
  const reply = el("pre", { id: "playground-reply", "aria-live": "polite" });
  const raw = el("pre", { id: "playground-request" });
  const rawReply = el("pre", { id: "playground-response" });
  const code = el("pre", { id: "playground-code" });
  const lang = el("select", {}, [["curl", "curl"], ["openai", "openai SDK (Python)"], ["anthropic", "anthropic SDK (Python)"]]
    .map(([v, t]) => el("option", { value: v, text: t })));
  let lastBody = null;
  const showCode = () => { if (lastBody) code.textContent = snippet(lang.value, lastBody); };
  lang.addEventListener("change", showCode);
  const form = el("form", {}, field("Model", model), field("Message", prompt), el("button", { type: "submit", text: "Send" }));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = { model: model.value, stream: true, messages: [{ role: "user", content: prompt.value }] };
    raw.textContent = JSON.stringify(body, null, 2);
    lastBody = body;
    showCode();
    reply.textContent = rawReply.textContent = "";
    delete reply.dataset.done;
    const resp = await fetch("/v1/chat/completions", { method: "POST", credentials: "same-origin",
      headers: { "content-type": "application/json", "x-csrf-token": state.csrf }, body: JSON.stringify(body) });
    if (!resp.ok) { reply.textContent = (await resp.json()).error?.message ?? resp.statusText; return; }
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      rawReply.textContent += value;
      const events = buffer.split("\n\n");
      buffer = events.pop();
      for (const event of events) {
        const data = event.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("");
        if (!data || data === "[DONE]") continue;
        const chunk = JSON.parse(data);
        reply.textContent += chunk.choices?.[0]?.delta?.content ?? "";
      }
    }
    reply.dataset.done = "true";
  });
  const copy = el("button", { type: "button", class: "secondary", text: "Copy code" });
  copy.addEventListener("click", async () => {
    try { await navigator.clipboard.writeText(code.textContent); copy.textContent = "Copied"; }
    catch { copy.textContent = "Select and copy the code"; }
  });
  view.append(el("h1", { text: "Playground" }), form, el("h2", { text: "Reply" }), reply,
    el("h2", { text: "Request" }), raw, el("h2", { text: "Response (raw stream)" }), rawReply,
    el("h2", { text: "The call as code" }), el("form", { onsubmit: (e) => e.preventDefault() }, field("Language", lang), copy), code);
}

// The playground's call as code; the key is a placeholder (the page never has it).
export function snippet(kind, body) {
  const base = `${location.origin}/v1`;
  const messages = JSON.stringify(body.messages, null, 4).replaceAll("\n", "\n    ");
  if (kind === "openai") {
    return `from openai import OpenAI\n\nclient = OpenAI(base_url="${base}", api_key="sk-sy-...")\n` +
      `stream = client.chat.completions.create(\n    model=${JSON.stringify(body.model)},\n    messages=${messages},\n    stream=True,\n)\n` +
      "for chunk in stream:\n    print(chunk.choices[0].delta.content or \"\", end=\"\")\n";
  }
  if (kind === "anthropic") {
    return `from anthropic import Anthropic\n\nclient = Anthropic(base_url="${location.origin}", api_key="sk-sy-...")\n` +
      `with client.messages.stream(\n    model=${JSON.stringify(body.model)},\n    max_tokens=1024,\n    messages=${messages},\n) as stream:\n` +
      "    for text in stream.text_stream:\n        print(text, end=\"\")\n";
  }
  const data = JSON.stringify(body).replaceAll("'", "'\\''");
  return `curl ${base}/chat/completions \\\n  -H "Authorization: Bearer $SWITCHYARD_API_KEY" \\\n  -H "Content-Type: application/json" \\\n  -d '${data}'\n`;
}

const ADMIN_VIEWS = { usage: ["Usage", usageView], keys: ["Keys", keysView], teams: ["Teams", teamsView],
  models: ["Models", modelsView], playground: ["Playground", playgroundView] };
const KEY_VIEWS = { me: ["My key", meView], usage: ["My usage", usageView], playground: ["Playground", playgroundView] };

async function route() {
  if (!state.me) return;
  const views = state.me.admin ? ADMIN_VIEWS : KEY_VIEWS;
  const name = location.hash.slice(1) in views ? location.hash.slice(1) : Object.keys(views)[0];
  $("nav").replaceChildren(...Object.entries(views).map(([id, [label]]) =>
    el("a", { href: `#${id}`, "aria-current": id === name ? "page" : null, text: label })));
  const view = $("view");
  view.replaceChildren();
  view.dataset.view = name;
  try { await views[name][1](view); } catch (err) {
    if (err.status === 401) return signedOut();
    showError(view, err);
  }
  view.dataset.ready = name;
}

function signedIn(who) {
  state.csrf = who.csrf_token;
  state.me = who;
  $("sign-in-view").hidden = true;
  $("view").hidden = false;
  $("nav").hidden = false;
  $("sign-out").hidden = false;
  $("who").textContent = `${who.name}${who.admin ? " (admin)" : ""}`;
  return route();
}

function signedOut() {
  state.csrf = state.me = null;
  $("sign-in-view").hidden = false;
  $("view").hidden = true;
  $("view").replaceChildren();
  $("nav").hidden = true;
  $("sign-out").hidden = true;
  $("who").textContent = "";
}

async function start() {
  $("sign-in-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const input = $("sign-in-key");
    try {
      const who = await api("/ui/api/session", { method: "POST", body: { key: input.value } });
      input.value = "";
      $("sign-in-error").textContent = "";
      await signedIn(who);
    } catch (err) { $("sign-in-error").textContent = err.message; }
  });
  $("sign-out").addEventListener("click", async () => {
    try { await api("/ui/api/session", { method: "DELETE" }); } finally { signedOut(); }
  });
  window.addEventListener("hashchange", route);
  try { await signedIn(await api("/ui/api/session")); } catch { signedOut(); }
}

start();
