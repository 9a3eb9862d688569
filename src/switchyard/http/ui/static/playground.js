// The playground: a streaming reply through Chat Completions or the Responses API (whose turns
// chain by previous_response_id), with the session; the raw request and stream; the call as code.
import { api, el, field, state } from "./ui.js";

const LANGS = { chat: [["curl", "curl"], ["openai", "openai SDK (Python)"], ["anthropic", "anthropic SDK (Python)"]],
  responses: [["curl", "curl"], ["openai", "openai SDK (Python)"]] };

// One server-sent events frame: its event name and its data lines joined.
function parseEvent(frame) {
  const lines = frame.split("\n");
  const name = lines.find((l) => l.startsWith("event:"))?.slice(6).trim() ?? "";
  return [name, lines.filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("")];
}

export async function playgroundView(view) {
  const models = (await api("/v1/models")).data.map((m) => m.id);
  const model = el("select", {}, models.map((m) => el("option", { value: m, text: m })));
  const prompt = el("textarea", { rows: 3, required: true });
  const reply = el("pre", { id: "playground-reply", "aria-live": "polite" });
  const raw = el("pre", { id: "playground-request" });
  const rawReply = el("pre", { id: "playground-response" });
  const code = el("pre", { id: "playground-code" });
  const lang = el("select", {});
  const chain = el("p", { id: "playground-chain", class: "hint" });
  const modes = [["chat", "Chat Completions"], ["responses", "Responses"]].map(([value, text]) => {
    const input = el("input", { type: "radio", name: "playground-api", value, id: `playground-api-${value}`,
      checked: value === "chat" });
    return el("span", { class: "choice" }, input, el("label", { for: input.id, text }));
  });
  const modeOf = () => modes.map((m) => m.querySelector("input")).find((i) => i.checked).value;
  let lastBody = null, lastMode = "chat", previous = null;
  const showChain = () => {
    chain.textContent = modeOf() === "responses" ? (previous ? `Continues response ${previous}.` : "A new conversation.") : "";
  };
  const showCode = () => { if (lastBody) code.textContent = snippet(lang.value, lastBody, lastMode); };
  const setLangs = () => {
    lang.replaceChildren(...LANGS[modeOf()].map(([v, t]) => el("option", { value: v, text: t })));
    showCode();
  };
  lang.addEventListener("change", showCode);
  for (const m of modes) m.querySelector("input").addEventListener("change", () => { setLangs(); showChain(); });
  setLangs();
  const restart = el("button", { type: "button", class: "secondary", text: "New conversation" });
  restart.addEventListener("click", () => { previous = null; showChain(); });
  const form = el("form", {}, el("fieldset", { class: "choices" }, el("legend", { text: "API" }), modes),
    field("Model", model), field("Message", prompt), el("button", { type: "submit", text: "Send" }), restart);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const mode = modeOf();
    const body = mode === "responses"
      ? { model: model.value, input: prompt.value, stream: true, ...(previous ? { previous_response_id: previous } : {}) }
      : { model: model.value, stream: true, messages: [{ role: "user", content: prompt.value }] };
    raw.textContent = JSON.stringify(body, null, 2);
    lastBody = body;
    lastMode = mode;
    showCode();
    reply.textContent = rawReply.textContent = "";
    delete reply.dataset.done;
    const resp = await fetch(mode === "responses" ? "/v1/responses" : "/v1/chat/completions", { method: "POST",
      credentials: "same-origin", headers: { "content-type": "application/json", "x-csrf-token": state.csrf },
      body: JSON.stringify(body) });
    if (!resp.ok) {
      const text = await resp.text();
      try { reply.textContent = JSON.parse(text).error?.message ?? resp.statusText; } catch { reply.textContent = resp.statusText; }
      return;
    }
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      rawReply.textContent += value;
      const frames = buffer.split("\n\n");
      buffer = frames.pop();
      for (const frame of frames) {
        const [name, data] = parseEvent(frame);
        if (!data || data === "[DONE]") continue;
        const event = JSON.parse(data);
        if (mode === "chat") reply.textContent += event.choices?.[0]?.delta?.content ?? "";
        else if ((event.type ?? name) === "response.output_text.delta") reply.textContent += event.delta ?? "";
        else if ((event.type ?? name) === "response.completed") previous = event.response?.id ?? previous;
        else if ((event.type ?? name) === "error" || (event.type ?? name) === "response.failed") {
          reply.textContent += `\n${event.error?.message ?? event.response?.error?.message ?? "The response failed."}`;
        }
      }
    }
    showChain();
    reply.dataset.done = "true";
  });
  const copy = el("button", { type: "button", class: "secondary", text: "Copy code" });
  copy.addEventListener("click", async () => {
    try { await navigator.clipboard.writeText(code.textContent); copy.textContent = "Copied"; }
    catch { copy.textContent = "Select and copy the code"; }
  });
  view.append(el("h1", { text: "Playground" }), form, chain, el("h2", { text: "Reply" }), reply,
    el("h2", { text: "Request" }), raw, el("h2", { text: "Response (raw stream)" }), rawReply,
    el("h2", { text: "The call as code" }), el("form", { onsubmit: (e) => e.preventDefault() }, field("Language", lang), copy), code);
}

// (the values are strings and lists of {role, content} strings: their JSON is Python too)
const py = (value) => JSON.stringify(value, null, 4).replaceAll("\n", "\n    ");

// The playground's call as code; the key is a placeholder (the page never has it).
export function snippet(kind, body, mode = "chat") {
  const base = `${location.origin}/v1`;
  const path = mode === "responses" ? "responses" : "chat/completions";
  if (kind === "openai" && mode === "responses") {
    const previous = body.previous_response_id ? `    previous_response_id=${JSON.stringify(body.previous_response_id)},\n` : "";
    return `from openai import OpenAI\n\nclient = OpenAI(base_url="${base}", api_key="sk-sy-...")\n` +
      `stream = client.responses.create(\n    model=${JSON.stringify(body.model)},\n    input=${py(body.input)},\n${previous}` +
      "    stream=True,\n)\nfor event in stream:\n    if event.type == \"response.output_text.delta\":\n" +
      "        print(event.delta, end=\"\")\n";
  }
  if (kind === "openai") {
    return `from openai import OpenAI\n\nclient = OpenAI(base_url="${base}", api_key="sk-sy-...")\n` +
      `stream = client.chat.completions.create(\n    model=${JSON.stringify(body.model)},\n    messages=${py(body.messages)},\n    stream=True,\n)\n` +
      "for chunk in stream:\n    print(chunk.choices[0].delta.content or \"\", end=\"\")\n";
  }
  if (kind === "anthropic") {
    return `from anthropic import Anthropic\n\nclient = Anthropic(base_url="${location.origin}", api_key="sk-sy-...")\n` +
      `with client.messages.stream(\n    model=${JSON.stringify(body.model)},\n    max_tokens=1024,\n    messages=${py(body.messages)},\n) as stream:\n` +
      "    for text in stream.text_stream:\n        print(text, end=\"\")\n";
  }
  const data = JSON.stringify(body).replaceAll("'", "'\\''");
  return `curl ${base}/${path} \\\n  -H "Authorization: Bearer $SWITCHYARD_API_KEY" \\\n  -H "Content-Type: application/json" \\\n  -d '${data}'\n`;
}
