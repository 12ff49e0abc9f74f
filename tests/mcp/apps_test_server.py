"""A real MCP server with an MCP App (io.modelcontextprotocol/ui), for the client, API and
browser tests: `roll` names the view `ui://dice/view`; `tally` is app-only (the model never sees
it); `model_note` is model-only (a view may not call it).

The view speaks the extension's postMessage JSON-RPC by hand (no SDK): it initialises, shows the
tool's input and result when the host sends them, then calls `tally` and `model_note` through the
host, reads the resources `dice://faces` and `dice://missing` (absent), sends a request the host
does not support, and shows every answer. Its buttons ask the host to open a link (https, or a
`javascript:` one) and to put a message in the chat. It also reports whether it can reach its
parent's DOM or storage (it must not: the frame is sandboxed without same-origin).
`dice://huge` is over the default mcp_app_max_bytes.

Run as a stdio server: `python apps_test_server.py`.
"""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer

VIEW_URI = "ui://dice/view"
APP_MIME = "text/html;profile=mcp-app"
FACES_URI = "dice://faces"
HUGE_URI = "dice://huge"
HUGE_BYTES = 2_100_000  # over the default mcp_app_max_bytes (2 000 000)

VIEW_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>Dice</title>
<style>body{font:14px sans-serif;margin:8px;color:#123} p{margin:4px 0}</style></head>
<body>
<h1 style="font-size:16px">Dice app</h1>
<p id="handshake">handshake: pending</p>
<p id="input">input: none</p>
<p id="result">result: none</p>
<p id="tally">tally: none</p>
<p id="model-only">model-only: none</p>
<p id="isolation">isolation: unknown</p>
<p id="resource">resource: none</p>
<p id="missing">missing resource: none</p>
<p id="unsupported">unsupported: none</p>
<p id="link">link: none</p>
<p id="message">message: none</p>
<button id="open" onclick="openLink('https://dice.example/rules')">Open the rules</button>
<button id="open-script" onclick="openLink('javascript:alert(1)')">Open a script</button>
<button id="say" onclick="say()">Ask to roll again</button>
<script>
var next = 1, waiting = {};
function request(method, params) {
  var id = next++;
  parent.postMessage({jsonrpc: "2.0", id: id, method: method, params: params}, "*");
  return new Promise(function (resolve, reject) { waiting[id] = {resolve: resolve, reject: reject}; });
}
function notify(method, params) { parent.postMessage({jsonrpc: "2.0", method: method, params: params}, "*"); }
function show(id, text) { document.getElementById(id).textContent = text; }
function failed(id) { return function (e) { show(id, id + " refused: " + e.code); }; }
function openLink(url) {
  request("ui/open-link", {url: url}).then(function () { show("link", "link: opened " + url); }, failed("link"));
}
function say() {
  request("ui/message", {role: "user", content: {type: "text", text: "Roll the die again, please"}})
    .then(function () { show("message", "message: in the box"); }, failed("message"));
}
function textOf(result) { return (result.content || []).map(function (c) { return c.text || ""; }).join(" "); }
window.addEventListener("message", function (ev) {
  var m = ev.data || {};
  if (m.id !== undefined && waiting[m.id]) {
    var w = waiting[m.id]; delete waiting[m.id];
    if (m.error) w.reject(m.error); else w.resolve(m.result);
    return;
  }
  if (m.method === "ui/notifications/tool-input") show("input", "input: " + JSON.stringify(m.params.arguments));
  if (m.method === "ui/notifications/tool-result") {
    show("result", "result: " + textOf(m.params));
    request("tools/call", {name: "tally", arguments: {by: 2}})
      .then(function (r) { show("tally", "tally: " + textOf(r)); }, function (e) { show("tally", "tally error: " + e.message); });
    request("tools/call", {name: "model_note", arguments: {}})
      .then(function (r) { show("model-only", "model-only: allowed " + textOf(r)); }, function (e) { show("model-only", "model-only refused: " + e.code); });
    request("resources/read", {uri: "dice://faces"})
      .then(function (r) { show("resource", "resource: " + r.contents[0].text); }, failed("resource"));
    request("resources/read", {uri: "dice://missing"})
      .then(function () { show("missing", "missing resource: read"); }, failed("missing"));
    request("ui/update-model-context", {content: [{type: "text", text: "x"}]})
      .then(function () { show("unsupported", "unsupported: answered"); }, failed("unsupported"));
  }
});
var reached = [];
try { reached.push("dom:" + parent.document.title); } catch (e) { }
try { reached.push("storage:" + localStorage.length); } catch (e) { }
try { reached.push("cookie:" + document.cookie); } catch (e) { }
show("isolation", reached.length ? "isolation: REACHED " + reached.join(",") : "isolation: parent and storage unreachable");
request("ui/initialize", {appInfo: {name: "dice", version: "1"}, appCapabilities: {}, protocolVersion: "2026-01-26"})
  .then(function (r) {
    show("handshake", "handshake: " + r.hostInfo.name + " " + r.protocolVersion + " tool " + r.hostContext.toolInfo.tool.name);
    notify("ui/notifications/initialized", {});
    notify("ui/notifications/size-changed", {height: document.body.scrollHeight + 16});
  });
</script>
</body></html>
"""


def build_server() -> MCPServer:
    srv = MCPServer("apps-test-server")
    tallied = {"total": 0}

    @srv.tool(meta={"ui": {"resourceUri": VIEW_URI}})
    def roll(sides: int) -> str:
        """Roll a die and show it in the dice app."""
        return f"rolled {max(1, sides // 2)} of {sides}"

    @srv.tool(meta={"ui": {"resourceUri": VIEW_URI, "visibility": ["app"]}})
    def tally(by: int) -> str:
        """Add to the app's running tally (the app's own tool)."""
        tallied["total"] += by
        return f"total {tallied['total']}"

    @srv.tool(meta={"ui": {"visibility": ["model"]}})
    def model_note() -> str:
        """A tool only the model may call."""
        return "a note for the model"

    @srv.resource(VIEW_URI, name="dice_view", mime_type=APP_MIME)
    def view() -> str:
        return VIEW_HTML

    @srv.resource(FACES_URI, name="faces", mime_type="text/plain")
    def faces() -> str:
        return "six faces"

    @srv.resource(HUGE_URI, name="huge", mime_type="text/plain")
    def huge() -> str:
        return "x" * HUGE_BYTES

    return srv


if __name__ == "__main__":
    build_server().run("stdio")
