// Vault credentials: only their display form is ever shown. Add (checked live unless told not to),
// check again, deactivate or activate, remove: each through /admin/credentials, each audited.
import { api, el, field, table } from "./ui.js";

export async function credentials(reload) {
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
    try {
      await api("/admin/credentials", { method: "POST", body });
      secret.value = "";
      await reload();
    } catch (err) { secret.value = ""; error.textContent = err.message; }
  });
  const outcome = el("p", { id: "credential-outcome", class: "hint", role: "status" });
  const act = async (c, path, method = "POST") => {
    try {
      const done = await api(`/admin/credentials/${encodeURIComponent(c.id)}${path}`, { method });
      await reload();
      if (path === "/check") {
        document.getElementById("credential-outcome").textContent = done.last_check_ok
          ? `${c.name}: the check passed.` : `${c.name}: the check failed: ${done.last_check_error ?? "no reason given"}`;
      }
    } catch (err) { outcome.textContent = `${c.name}: ${err.message}`; }
  };
  const actions = (c) => el("span", { class: "actions" },
    el("button", { type: "button", class: "secondary", text: "Check", "aria-label": `Check ${c.name}`,
      onclick: () => act(c, "/check") }),
    el("button", { type: "button", class: "secondary", text: c.active ? "Deactivate" : "Activate",
      "aria-label": `${c.active ? "Deactivate" : "Activate"} ${c.name}`,
      onclick: () => act(c, c.active ? "/deactivate" : "/activate") }),
    el("button", { type: "button", class: "secondary", text: "Remove", "aria-label": `Remove ${c.name}`,
      onclick: () => { if (confirm(`Remove the credential ${c.name}?`)) act(c, "", "DELETE"); } }));
  return el("section", { id: "credentials", "aria-labelledby": "credentials-title" },
    el("h2", { id: "credentials-title", text: "Credentials" }),
    table([{ label: "Name", key: "name" }, { label: "Provider", key: "provider" }, { label: "Key", key: "display" },
      { label: "Active", render: (c) => c.active ? "yes" : "no" },
      { label: "Last check", render: (c) => c.last_check_ok == null ? "never" : (c.last_check_ok ? "ok" : "failed") },
      { label: "Actions", render: actions }], creds),
    outcome, el("h3", { text: "Add a credential" }), form);
}
