// Usage and cost from the hourly rollups: a chart, a table per model, key or team, CSV export.
import { barChart } from "./chart.js";
import { api, csvCell, el, field, showError, state, table, usd } from "./ui.js";

const RANGES = { "24h": "Last 24 hours", "7d": "Last 7 days", "30d": "Last 30 days", "365d": "Last year" };
const METRICS = { cost_usd: "Cost (USD)", requests: "Requests", total_tokens: "Tokens", errors: "Errors" };

export async function usageView(view) {
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

