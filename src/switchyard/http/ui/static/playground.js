// The playground: streaming chat with the session, the raw stream, and the call as code.
import { api, el, field, state } from "./ui.js";

export async function playgroundView(view) {
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

