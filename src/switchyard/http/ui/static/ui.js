// The console's shared pieces: the session state, the API client (the CSRF token on every change),
// and small DOM helpers. Text from the server is only ever set as textContent, never parsed as HTML.

export const state = { csrf: null, me: null };

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

export const $ = (id) => document.getElementById(id);
export const usd = (v) => `$${Number(v || 0).toFixed(v && v < 0.01 ? 6 : 2)}`;
export const csvCell = (v) => /[",\n]/.test(String(v ?? "")) ? `"${String(v).replaceAll('"', '""')}"` : String(v ?? "");

export function budgetBar(status) {
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
export function sizeBars(root) {
  for (const fill of root.querySelectorAll(".budget-fill")) fill.style.width = `${Number(fill.dataset.share) * 100}%`;
}

// A wide table scrolls inside its box on a phone: the box takes focus, so a keyboard can scroll it.
export function table(columns, rows, label = columns.map((c) => c.label).join(", ")) {
  return el("div", { class: "table-wrap", tabindex: 0, role: "region", "aria-label": `Table: ${label}` }, el("table", {},
    el("thead", {}, el("tr", {}, columns.map((c) => el("th", { scope: "col", class: c.num ? "num" : null, text: c.label })))),
    el("tbody", {}, rows.map((row) => el("tr", {}, columns.map((c) => {
      const value = c.render ? c.render(row) : row[c.key];
      return el("td", { class: c.num ? "num" : null }, value instanceof Node ? value : String(value ?? ""));
    }))))));
}

export function field(label, input) {
  const id = `f-${Math.random().toString(36).slice(2)}`;
  input.id = id;
  return el("div", { class: "field" }, el("label", { for: id, text: label }), input);
}

export function showError(view, err) {
  view.append(el("p", { class: "error", role: "alert", text: err.message }));
}

