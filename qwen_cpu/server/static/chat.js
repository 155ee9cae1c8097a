// The chat page: a conversation kept in `messages`, sent whole to /v1/chat/completions with
// stream: true; the answer's SSE chunks are appended as they arrive. Stop aborts the fetch,
// which closes the connection: the server then cancels the generation and frees its slot.
"use strict";

const $ = (id) => document.getElementById(id);
const log = $("log"), input = $("input"), sendBtn = $("send"), stopBtn = $("stop"), status = $("status");
let model = null;
let messages = [];
let controller = null;

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("key").value || localStorage.getItem("qwen-cpu-key");
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

function bubble(cls, text) {
  const div = document.createElement("div");
  div.className = "msg " + cls;
  div.textContent = text;
  log.appendChild(div);
  log.scrollTop = log.scrollHeight;
  return div;
}

async function errorText(resp) {
  if (resp.status === 401) $("keyrow").hidden = false;
  try { return (await resp.json()).error.message; } catch { return resp.status + " " + resp.statusText; }
}

async function loadModel() {
  const resp = await fetch("/v1/models", { headers: headers() });
  if (!resp.ok) { $("model").textContent = await errorText(resp); return; }
  model = (await resp.json()).data[0].id;
  $("model").textContent = model;
}

// Yields the parsed JSON of each `data:` event of an SSE body, until `data: [DONE]`.
async function* events(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value;
    let end;
    while ((end = buf.indexOf("\n\n")) >= 0) {
      const event = buf.slice(0, end);
      buf = buf.slice(end + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") return;
        yield JSON.parse(data);
      }
    }
  }
}

function busy(on) {
  sendBtn.disabled = on;
  stopBtn.disabled = !on;
  input.disabled = on;
}

async function send(text) {
  if (!model) await loadModel();
  if (!model) return;
  messages.push({ role: "user", content: text });
  bubble("user", text);
  const out = bubble("assistant streaming", "");
  let answer = "", finish = null, usage = null;
  const t0 = performance.now();
  controller = new AbortController();
  busy(true);
  status.textContent = "thinking...";
  try {
    const resp = await fetch("/v1/chat/completions", {
      method: "POST", headers: headers(), signal: controller.signal,
      body: JSON.stringify({
        model, messages, stream: true, stream_options: { include_usage: true },
        temperature: Number($("temp").value), max_tokens: Number($("maxtok").value),
      }),
    });
    if (!resp.ok) throw new Error(await errorText(resp));
    for await (const chunk of events(resp.body)) {
      if (chunk.error) throw new Error(chunk.error.message);
      if (chunk.usage) usage = chunk.usage;
      const choice = chunk.choices && chunk.choices[0];
      if (!choice) continue;
      if (choice.delta && choice.delta.content) {
        answer += choice.delta.content;
        out.textContent = answer;
        log.scrollTop = log.scrollHeight;
      }
      if (choice.finish_reason) finish = choice.finish_reason;
    }
  } catch (e) {
    if (e.name === "AbortError") finish = "stopped";
    else bubble("error", String(e.message || e));
  } finally {
    out.classList.remove("streaming");
    busy(false);
    controller = null;
    input.focus();
  }
  if (answer) messages.push({ role: "assistant", content: answer });
  else if (finish !== "stopped") { messages.pop(); out.remove(); }  // failed turn: forget it
  const secs = (performance.now() - t0) / 1000;
  status.textContent = (finish ? finish : "") + (usage ? ` - ${usage.completion_tokens} tokens in ${secs.toFixed(1)} s` : "");
}

$("ask").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const text = input.value.trim();
  if (!text || controller) return;
  input.value = "";
  send(text);
});
input.addEventListener("keydown", (ev) => {
  if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); $("ask").requestSubmit(); }
});
stopBtn.addEventListener("click", () => { if (controller) controller.abort(); });
$("reset").addEventListener("click", () => {
  if (controller) controller.abort();
  messages = [];
  log.textContent = "";
  status.textContent = "";
});
$("key").addEventListener("change", () => { localStorage.setItem("qwen-cpu-key", $("key").value); loadModel(); });
loadModel();
