// Upstreams, local models (load, unload), model aliases and vault credentials.
import { credentials } from "./credentials.js";
import { modelForm } from "./model_form.js";
import { api, el, field, showError, table } from "./ui.js";

export async function modelsView(view) {
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
        await storedModels(reload, status.upstreams), await credentials(reload));
    } catch (err) { box.replaceChildren(); showError(box, err); }
  }
  await reload();
}

// Models stored over /admin/models (the file's are listed, read-only): add, edit, disable or enable, remove.
async function storedModels(reload, upstreams) {
  const models = (await api("/admin/models")).data;
  let credentialNames = [];
  try { credentialNames = (await api("/admin/credentials")).data.map((c) => c.name); } catch { /* no vault */ }
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
  const editor = el("div", { id: "model-editor" });
  const edit = (m) => {
    editor.replaceChildren(el("h3", { text: `Edit ${m.alias}` }), modelForm(m, upstreams, credentialNames, reload,
      () => editor.replaceChildren()));
    editor.querySelector("input, select")?.focus();
  };
  const action = (m) => m.source !== "database" ? el("span", { class: "hint", text: "from the file" }) : el("span", { class: "actions" },
    el("button", { type: "button", class: "secondary", text: "Edit", "aria-label": `Edit ${m.alias}`, onclick: () => edit(m) }),
    el("button", { type: "button", class: "secondary", text: m.active === false ? "Enable" : "Disable",
      "aria-label": `${m.active === false ? "Enable" : "Disable"} ${m.alias}`,
      onclick: async () => { await api(`/admin/models/${m.id}`, { method: "PATCH", body: { active: m.active === false } }); reload(); } }),
    el("button", { type: "button", class: "secondary", text: "Remove", "aria-label": `Remove ${m.alias}`,
      onclick: async () => { if (confirm(`Remove ${m.alias}?`)) { await api(`/admin/models/${m.id}`, { method: "DELETE" }); reload(); } } }));
  const settings = (m) => {
    const ps = m.provider_settings || {};
    return [ps.max_concurrent ? `max ${ps.max_concurrent} at once` : null, ps.timeout ? `timeout ${ps.timeout}s` : null,
      ...Object.entries(ps.capabilities || {}).map(([k, v]) => `${k}: ${v ? "yes" : "no"}`)].filter(Boolean).join(", ");
  };
  return el("section", { id: "stored-models", "aria-labelledby": "stored-models-title" },
    el("h2", { id: "stored-models-title", text: "Model aliases" }),
    table([{ label: "Alias", key: "alias" }, { label: "Provider", key: "provider" }, { label: "Upstream model", key: "model" },
      { label: "Base URL", render: (m) => m.base_url ?? "" },
      { label: "Source", key: "source" }, { label: "Active", render: (m) => m.active === false ? "no" : "yes" },
      { label: "USD per 1M in / out", render: (m) => m.input_cost_per_1m == null ? "" : `${m.input_cost_per_1m} / ${m.output_cost_per_1m ?? 0}` },
      { label: "Settings", render: settings },
      { label: "Actions", render: action }], models),
    editor, el("h3", { text: "Add a model" }), form);
}
