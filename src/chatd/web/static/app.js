// A deliberately small client of the public API: the token lives in localStorage, chats come from
// /api/v1/chats and /chats/watch, a chat's history and live parts from its SSE stream.
const api = "/api/v1";
let token = localStorage.getItem("chatd-token");
const hash = new URLSearchParams(location.hash.slice(1));
if (hash.get("token")) { token = hash.get("token"); localStorage.setItem("chatd-token", token); history.replaceState(null, "", "/"); }
const $ = (id) => document.getElementById(id);
let current = null, source = null, live = null;

async function call(method, path, body) {
  const r = await fetch(api + path, { method, headers: { "Authorization": "Bearer " + token, "Content-Type": "application/json" }, body: body && JSON.stringify(body) });
  if (r.status === 401) { showLogin(); throw new Error("unauthenticated"); }
  if (!r.ok) { const e = await r.json().catch(() => ({})); alert(e.message || r.statusText); throw new Error(e.message); }
  return r.status === 204 ? null : r.json();
}

function showLogin() { $("login").hidden = false; $("chat").hidden = true; }
$("save").onclick = () => { token = $("token").value.trim(); localStorage.setItem("chatd-token", token); start(); };

async function loadChats() {
  const chats = await call("GET", "/chats");
  const ul = $("chats"); ul.innerHTML = "";
  for (const c of chats) {
    const li = document.createElement("li");
    li.textContent = (c.title || "New chat") + " · " + c.status;
    li.className = c.id === current ? "active" : "";
    li.onclick = () => open(c.id);
    ul.appendChild(li);
  }
}

function textOf(parts) {
  return parts.map((p) => p.type === "text" || p.type === "reasoning" ? p.text
    : p.type === "tool-call" ? `⚙ ${p.tool_name}(${JSON.stringify(p.args ?? p.args_delta ?? "")})`
    : p.type === "tool-result" ? `→ ${JSON.stringify(p.result).slice(0, 400)}` : "").join("");
}

function render(msg) {
  let el = document.getElementById("m" + msg.id);
  if (!el) { el = document.createElement("div"); el.id = "m" + msg.id; $("messages").appendChild(el); }
  el.className = "msg " + msg.role;
  el.textContent = textOf(msg.content || []);
}

// EventSource cannot send an Authorization header, so the stream is read with fetch and parsed here.
async function follow(id, handlers, signal) {
  const r = await fetch(`${api}/chats/${id}/stream`, { headers: { "Authorization": "Bearer " + token }, signal });
  const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read(); if (done) return;
    buf += value;
    let i;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, i); buf = buf.slice(i + 2);
      let event = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data += line.slice(5).trim();
      }
      if (data && handlers[event]) handlers[event](JSON.parse(data));
    }
  }
}

function open(id) {
  current = id; if (source) source.abort();
  $("login").hidden = true; $("chat").hidden = false; $("messages").innerHTML = ""; $("queue").textContent = "";
  live = null;
  source = new AbortController();
  follow(id, {
    message: (m) => { if (live) { live.remove(); live = null; } render(m.message || m); },
    message_part: (p) => {
      if (!live) { live = document.createElement("div"); live.className = "msg assistant"; $("messages").appendChild(live); }
      live.textContent += textOf([p.part || p]);
    },
    status: (s) => { $("status").textContent = s.status; loadChats(); },
    queue_update: (q) => { const n = (q.queue || q.queued_messages || []).length; $("queue").textContent = n ? `${n} queued` : ""; },
    error: (x) => { $("status").textContent = "error: " + (x.message || x.error); },
  }, source.signal).catch(() => {});
  call("GET", `/chats/${id}`).then((c) => { $("title").textContent = c.title || "New chat"; });
  loadChats();
}

$("composer").onsubmit = async (e) => {
  e.preventDefault();
  const content = $("input").value.trim(); if (!content) return;
  $("input").value = "";
  if (current) await call("POST", `/chats/${current}/messages`, { content });
  else { const c = await call("POST", "/chats", { content }); open(c.id); }
};
$("new").onclick = () => { current = null; if (source) source.abort(); $("login").hidden = true; $("chat").hidden = false; $("messages").innerHTML = ""; $("title").textContent = "New chat"; };
$("interrupt").onclick = () => current && call("POST", `/chats/${current}/interrupt`);

function start() { if (!token) return showLogin(); $("login").hidden = true; loadChats().then(() => $("new").onclick()); }
start();
