// Editing a stored model: its upstream model, provider, base URL (one of the configured providers'
// or another), credential, prices, concurrency, timeout, context length, rate limit and capabilities.
// The PATCH (a JSON merge patch: null removes a field) names only what changed, so the audit log
// shows exactly that.
import { api, el, field } from "./ui.js";

const CAPABILITIES = [["tools", "Tools"], ["vision", "Images (vision)"], ["json_schema", "JSON schema output"]];
const PRICES = [["input_cost_per_1m", "Input USD per 1M tokens"], ["output_cost_per_1m", "Output USD per 1M tokens"],
  ["cache_read_cost_per_1m", "Cache read USD per 1M tokens"], ["cache_write_cost_per_1m", "Cache write USD per 1M tokens"]];

const numberInput = (value, attrs = {}) => el("input", { type: "number", step: "any", min: 0, value: value ?? "", ...attrs });
const numberOrNull = (input) => input.value === "" ? null : Number(input.value);

function select(options, value) {
  const node = el("select", {}, options.map(([v, t]) => el("option", { value: v, text: t })));
  node.value = value;
  return node;
}

export function modelForm(m, upstreams, credentialNames, reload, close) {
  const ps = m.provider_settings || {}, caps = ps.capabilities || {};
  const providers = [...new Set([...upstreams.map((u) => u.name), m.provider])];
  const provider = select(providers.map((p) => [p, p]), m.provider);
  const listId = `base-urls-${m.id}`;
  const baseUrls = el("datalist", { id: listId }, upstreams.filter((u) => u.base_url)
    .map((u) => el("option", { value: u.base_url, label: u.name })));
  const inputs = {
    model: el("input", { value: m.model ?? "" }),
    base_url: el("input", { type: "url", list: listId, value: m.base_url ?? "", placeholder: "the provider's own" }),
    credential: select([["", "none (the provider's key)"], ...[...new Set([...credentialNames, m.credential].filter(Boolean))]
      .map((c) => [c, c])], m.credential ?? ""),
    max_tokens: numberInput(m.max_tokens, { min: 1, step: 1 }),
    supports_streaming: el("input", { type: "checkbox", checked: m.supports_streaming !== false }),
  };
  const prices = Object.fromEntries(PRICES.map(([k]) => [k, numberInput(m[k])]));
  const maxConcurrent = numberInput(ps.max_concurrent, { min: 1, step: 1 });
  const timeout = numberInput(ps.timeout);
  const rpm = numberInput(m.rate_limits?.per_minute, { min: 1, step: 1 });
  const capability = Object.fromEntries(CAPABILITIES.map(([k]) => [k,
    select([["", "the provider's default"], ["true", "yes"], ["false", "no"]], k in caps ? String(caps[k]) : "")]));
  const error = el("p", { class: "error", role: "alert" });
  const form = el("form", { "aria-label": `Edit ${m.alias}` },
    field("Upstream model", inputs.model), field("Provider", provider), field("Base URL", inputs.base_url), baseUrls,
    field("Credential", inputs.credential), ...PRICES.map(([k, label]) => field(label, prices[k])),
    field("Max concurrent requests", maxConcurrent), field("Timeout (seconds)", timeout),
    field("Context length (tokens)", inputs.max_tokens), field("Requests per minute", rpm),
    field("Streaming", inputs.supports_streaming), ...CAPABILITIES.map(([k, label]) => field(label, capability[k])),
    el("button", { type: "submit", text: "Save model" }),
    el("button", { type: "button", class: "secondary", text: "Cancel", onclick: close }), error);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = {};
    const put = (name, value, current) => { if (value !== (current ?? null)) body[name] = value; };
    put("model", inputs.model.value || null, m.model);
    put("provider", provider.value, m.provider);
    put("base_url", inputs.base_url.value || null, m.base_url);
    put("credential", inputs.credential.value || null, m.credential);
    put("max_tokens", numberOrNull(inputs.max_tokens), m.max_tokens);
    put("supports_streaming", inputs.supports_streaming.checked, m.supports_streaming !== false);
    for (const [k] of PRICES) put(k, numberOrNull(prices[k]), m[k]);
    const perMinute = numberOrNull(rpm);
    if (perMinute !== (m.rate_limits?.per_minute ?? null)) body.rate_limits = { per_minute: perMinute };
    const settings = {}, capsPatch = {};
    if (numberOrNull(maxConcurrent) !== (ps.max_concurrent ?? null)) settings.max_concurrent = numberOrNull(maxConcurrent);
    if (numberOrNull(timeout) !== (ps.timeout ?? null)) settings.timeout = numberOrNull(timeout);
    for (const [k] of CAPABILITIES) {
      const value = capability[k].value === "" ? null : capability[k].value === "true";
      if (value !== (k in caps ? caps[k] : null)) capsPatch[k] = value;
    }
    if (Object.keys(capsPatch).length) settings.capabilities = capsPatch;
    if (Object.keys(settings).length) body.provider_settings = settings;
    if (!Object.keys(body).length) { close(); return; }
    try {
      await api(`/admin/models/${encodeURIComponent(m.id)}`, { method: "PATCH", body });
      close();
      await reload();
    } catch (err) { error.textContent = err.message; }
  });
  return form;
}
