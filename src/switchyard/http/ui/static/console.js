// The Switchyard console: plain ES modules, no framework, no inline script (the CSP allows none).
// Every change goes through the admin API (or /v1) with the session cookie and the CSRF token.
// This module: sign-in, sign-out and the views by the URL's hash.
import { keysView, meView, teamsView } from "./keys.js";
import { modelsView } from "./models.js";
import { playgroundView } from "./playground.js";
import { $, api, el, showError, state } from "./ui.js";
import { usageView } from "./usage.js";

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
