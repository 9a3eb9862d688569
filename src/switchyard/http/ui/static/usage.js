// Usage and cost from the hourly rollups: a chart, a table per model (with p50/p95 latency), key,
// team or agent session (each with its error rate), CSV export. Sessions come from the raw rows
// still kept.
import { barChart } from "./chart.js";
import { api, csvCell, el, field, showError, state, table, usd } from "./ui.js";

const RANGES = { "24h": "Last 24 hours", "7d": "Last 7 days", "30d": "Last 30 days", "365d": "Last year" };
const METRICS = { cost_usd: "Cost (USD)", requests: "Requests", total_tokens: "Tokens", errors: "Errors" };
const LABELS = {
  model: { label: "Model", key: "model" },
  key: { label: "Key", render: (r) => r.key_name ?? r.key_id ?? "(no key)" },
  team: { label: "Team", render: (r) => r.team_name ?? r.team_id ?? "(no team)" },
  session: { label: "Session", render: (r) => r.session_id ?? "(none)" },
};
const ms = (v) => (v === null || v === undefined ? "–" : `${Math.round(v)} ms`);
const rate = (r) => (r.requests ? `${(100 * r.errors / r.requests).toFixed(1)}%` : "");

export async function usageView(view) {
  const admin = state.me.admin;
  const range = el("select", {}, Object.entries(RANGES).map(([v, t]) => el("option", { value: v, text: t })));
  range.value = "7d";
  const metric = el("select", {}, Object.entries(METRICS).map(([v, t]) => el("option", { value: v, text: t })));
  const by = el("select", {}, (admin ? ["model", "key", "team", "session"] : ["model", "session"]).map((v) => el("option", { value: v, text: `per ${v}` })));
  const out = el("div", { id: "usage-out" });
  const exportBtn = el("button", { type: "button", class: "secondary", text: "Export CSV" });
  let last = [];
  const base = admin ? "/admin/usage" : "/ui/api/me/usage";
  async function draw() {
    out.replaceChildren(el("p", { class: "hint", text: "Loading…" }));
    try {
      const step = range.value === "24h" ? "hour" : "day";
      const [series, split] = await Promise.all([
        api(`${base}?since=${range.value}&group_by=${step}&latency=false`),
        // the percentiles are most of a query's work: only the per-model table asks for them
        api(`${base}?since=${range.value}&group_by=${by.value}&latency=${by.value === "model"}`)]);
      last = split.data;
      const name = METRICS[metric.value];
      out.replaceChildren(
        el("div", { class: "chart", role: "img", "aria-label": `${name} per ${step}, ${RANGES[range.value]}` },
          barChart(series.data.map((r) => ({ label: r.period, value: Number(r[metric.value] || 0) })), name)),
        el("p", { id: "usage-totals", text: `Total: ${split.totals.requests} requests, ${split.totals.total_tokens} tokens, ${usd(split.totals.cost_usd)}` }),
        by.value === "session" ? el("p", { class: "hint", text: "Sessions are totalled from the raw usage rows, which are kept for the usage retention period only." }) : null,
        table([
          LABELS[by.value],
          { label: "Requests", key: "requests", num: true }, { label: "Tokens", key: "total_tokens", num: true },
          { label: "Errors", key: "errors", num: true }, { label: "Error rate", render: rate, num: true },
          ...(by.value === "model" ? [{ label: "p50 latency", render: (r) => ms(r.p50_ms), num: true },
            { label: "p95 latency", render: (r) => ms(r.p95_ms), num: true }] : []),
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
